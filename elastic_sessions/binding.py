"""Binding a signed-in session to the browser and network it signed in from.

At login (policies.py) the session records, under ``BINDING_KEY``, a digest of
the user agent and/or the client's network: its IP address masked to
``BIND_IPV4_PREFIX`` or ``BIND_IPV6_PREFIX``.  Each later load compares the
request's client with that record (backends/base.py); a stolen cookie replayed
from elsewhere then ends the session instead of continuing it.
"""

from __future__ import annotations

import ipaddress

from .client import RequestClient
from .conf import elastic_settings

BINDING_KEY = "_elastic_binding"

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(ip: str | None) -> _Address | None:
    if ip is None:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    # An IPv4 client seen through a dual-stack socket is still that IPv4 client.
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def _prefix(version: int) -> int:
    if version == 4:
        return elastic_settings.BIND_IPV4_PREFIX
    return elastic_settings.BIND_IPV6_PREFIX


def binding_for(client: RequestClient) -> dict[str, str] | None:
    """What a login from ``client`` records under the current settings; None: nothing.

    ``ua`` is the hex digest of the user agent (``BIND_USER_AGENT``); ``net`` the
    network, as ``"203.0.113.0/24"``, when either prefix is set and the address
    is known (masked to its own family's prefix, 0 for an unbound family).
    """
    binding: dict[str, str] = {}
    if elastic_settings.BIND_USER_AGENT:
        binding["ua"] = client.digest().hex()
    address = _address(client.ip)
    if address is not None and _binds_networks():
        # A family without a prefix records its whole range (/0): moving within
        # it is fine, moving to the bound family is not.
        network = ipaddress.ip_network(f"{address}/{_prefix(address.version)}", strict=False)
        binding["net"] = str(network)
    return binding or None


def _binds_networks() -> bool:
    return bool(elastic_settings.BIND_IPV4_PREFIX or elastic_settings.BIND_IPV6_PREFIX)


def binding_mismatch(binding: object, client: RequestClient) -> str | None:
    """What of ``client`` differs from a recorded ``binding``: ``"user agent"``,
    ``"network"``, or None when it matches.

    Only what the settings still bind is compared: turning ``BIND_USER_AGENT``
    off, or both prefixes to 0, stops that check at once.  A client in another
    address family than the recorded network is outside it.  A recorded network
    that cannot be read, or a client without a usable IP address, counts as a
    mismatch: the check fails closed.
    """
    if not isinstance(binding, dict):
        return None
    digest = binding.get("ua")
    if (
        elastic_settings.BIND_USER_AGENT
        and isinstance(digest, str)
        and digest != client.digest().hex()
    ):
        return "user agent"
    recorded = binding.get("net")
    if recorded is None or not _binds_networks():
        return None
    try:
        network: _Network = ipaddress.ip_network(str(recorded))
    except ValueError:
        return "network"
    address = _address(client.ip)
    return None if address is not None and address in network else "network"
