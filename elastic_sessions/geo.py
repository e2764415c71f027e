"""Where an IP address is, where that is available, for the sessions page.

A location is a nicety: any failure to find one gives ``None``, never an error
page.  IP addresses are personal data, so nothing here logs one.
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
from collections.abc import Callable
from functools import lru_cache

from django.conf import settings
from django.contrib.gis.geoip2 import HAS_GEOIP2, GeoIP2, GeoIP2Exception
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from .conf import elastic_settings

__all__ = ["locate_ip"]

logger = logging.getLogger(__name__)

Locator = Callable[[str], object]

# Exception classes a locator has already been logged for: a locator that
# fails for every address would otherwise log once per row of every page.
_warned: set[type[BaseException]] = set()


def locate_ip(ip: str | None) -> str | None:
    """Return where ``ip`` is ("Lisbon, Portugal"), or ``None`` when unknown.

    ``ELASTIC_SESSIONS["IP_LOCATOR"]`` wins when set; otherwise Django's
    ``GeoIP2`` is used if ``GEOIP_PATH`` is set and ``geoip2`` is installed.
    ``None``, invalid, private, loopback and other non-public addresses give
    ``None`` without asking either.  A locator that raises is logged (once per
    exception class) and gives ``None``.

    :raises ImproperlyConfigured: if ``IP_LOCATOR`` cannot be imported or is
        not callable.
    """
    address = _public_address(ip)
    if address is None:
        return None
    path = elastic_settings.IP_LOCATOR
    if path is not None:
        return _ask_locator(path, address)
    return _ask_geoip2(address)


def _public_address(ip: str | None) -> str | None:
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    # Python 3.11 calls "::ffff:8.8.8.8" reserved: judge the IPv4 address inside.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # is_global excludes private, loopback, link-local, reserved, shared (CGNAT)
    # and documentation ranges, but not multicast.
    if not address.is_global or address.is_multicast:
        return None
    return str(address)


def _ask_locator(path: str, address: str) -> str | None:
    locator = import_locator(path)
    try:
        result = locator(address)
    # A deliberate fallback, not a swallowed error: the locator is user code or
    # a remote service, and a missing location must not break the page.  The
    # first failure of each kind is logged so that a broken locator is noticed.
    except Exception as err:
        if type(err) not in _warned:
            _warned.add(type(err))
            # Only the class name: the message may well contain the address.
            logger.warning(
                "ELASTIC_SESSIONS['IP_LOCATOR'] %s raised %s; no location is shown "
                "(logged once per exception class).",
                path,
                _class_name(type(err)),
            )
        return None
    return result if isinstance(result, str) and result else None


@lru_cache(maxsize=8)
def import_locator(path: str) -> Locator:
    # Keyed by the dotted path, so a changed setting imports its own locator.
    try:
        locator: object = import_string(path)
    except ImportError as err:
        raise ImproperlyConfigured(
            f"ELASTIC_SESSIONS['IP_LOCATOR'] must be the dotted path of a callable "
            f"(ip: str) -> str | None; {path!r} could not be imported: {err}"
        ) from err
    if not callable(locator):
        raise ImproperlyConfigured(
            f"ELASTIC_SESSIONS['IP_LOCATOR'] must be the dotted path of a callable "
            f"(ip: str) -> str | None; {path!r} is a {type(locator).__name__}."
        )
    return locator


def _ask_geoip2(address: str) -> str | None:
    path = getattr(settings, "GEOIP_PATH", None)
    if not path or not HAS_GEOIP2:
        return None
    try:
        geoip = _open_geoip2(str(path))
        if not geoip.is_city:
            return geoip.country(address)["country_name"] or None
        city = geoip.city(address)
    except _geoip2_errors():
        return None
    if city["city"] and city["country_name"]:
        return f"{city['city']}, {city['country_name']}"
    return city["country_name"] or None


@lru_cache(maxsize=1)
def _open_geoip2(path: str) -> GeoIP2:
    # Opening reads the database's metadata: once per path, not once per row.
    return GeoIP2(path)


@lru_cache(maxsize=1)
def _geoip2_errors() -> tuple[type[Exception], ...]:
    # GeoIP2's documented errors.  geoip2 is optional and untyped for mypy, so
    # its error class is looked up at run time.
    errors: list[type[Exception]] = [GeoIP2Exception, ValueError]
    try:
        geoip2_errors = importlib.import_module("geoip2.errors")
    except ImportError:
        pass
    else:
        errors.append(geoip2_errors.AddressNotFoundError)
    return tuple(errors)


def _class_name(cls: type[BaseException]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "ELASTIC_SESSIONS":
        _warned.clear()
        import_locator.cache_clear()
    elif setting in {"GEOIP_PATH", "GEOIP_CITY", "GEOIP_COUNTRY"}:
        _open_geoip2.cache_clear()


setting_changed.connect(_on_setting_changed)
