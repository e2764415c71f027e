"""Who is using a session: the IP address and device a request came from.

Stored in one small field per session (``\\x07``, see codec.py): when it was
written (last seen), the IP address, a digest of the full user agent (to notice
a change without storing it) and the browser and OS in words.  It stays within
Redis' 64-byte listpack value limit, so a small session keeps the compact
encoding (a full user agent string would not).
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from dataclasses import dataclass

from django.http import HttpRequest

from .conf import elastic_settings
from .useragent import short_description

CLIENT_FIELD = b"\x07"
_MAX_FIELD = 64
# last seen (epoch s), IP length (0, 4 or 16), then the IP, the digest, the words.
_HEAD = struct.Struct(">IB")
_DIGEST_BYTES = 6


@dataclass(frozen=True, slots=True)
class RequestClient:
    """The client of the current request, as the middleware saw it."""

    ip: str | None
    user_agent: str

    def digest(self) -> bytes:
        return hashlib.blake2b(
            self.user_agent.encode(errors="replace"), digest_size=_DIGEST_BYTES
        ).digest()

    def packed_ip(self) -> bytes:
        if self.ip is None:
            return b""
        return ipaddress.ip_address(self.ip).packed

    def stamp(self, now: int) -> bytes:
        """The stored field for this client, seen at ``now`` (epoch seconds)."""
        ip = self.packed_ip()
        head = _HEAD.pack(now, len(ip)) + ip + self.digest()
        return head + short_description(self.user_agent, _MAX_FIELD - len(head)).encode()

    def matches(self, raw: bytes | None) -> bool:
        """True if ``raw`` (a stored field) names this same IP address and user agent."""
        if raw is None or len(raw) < _HEAD.size:
            return False
        ip = self.packed_ip()
        _, ip_length = _HEAD.unpack_from(raw)
        start = _HEAD.size
        return (
            raw[start : start + ip_length] == ip
            and raw[start + ip_length : start + ip_length + _DIGEST_BYTES] == self.digest()
        )


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """A stored client field, decoded."""

    last_seen: int
    ip: str | None
    device: str


def decode_client(raw: bytes | None) -> ClientRecord | None:
    """The record in a stored field; None when absent or unreadable."""
    if not raw or len(raw) < _HEAD.size:
        return None
    last_seen, ip_length = _HEAD.unpack_from(raw)
    start = _HEAD.size
    ip_bytes = raw[start : start + ip_length]
    if ip_length not in (0, 4, 16) or len(ip_bytes) != ip_length:
        return None
    ip = str(ipaddress.ip_address(ip_bytes)) if ip_length else None
    device = raw[start + ip_length + _DIGEST_BYTES :].decode(errors="replace")
    return ClientRecord(last_seen, ip, device)


def _valid_ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def client_ip(request: HttpRequest) -> str | None:
    """The client's IP address, trusting ``PROXY_COUNT`` proxies; None if unusable.

    With proxies, the address is the one the outermost trusted proxy appended
    to ``X-Forwarded-For``: addresses further left are whatever the client sent.
    """
    proxies = elastic_settings.PROXY_COUNT
    if proxies:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= proxies:
            return _valid_ip(hops[-proxies])
    return _valid_ip(str(request.META.get("REMOTE_ADDR", "")))


def request_client(request: HttpRequest) -> RequestClient:
    # The first 512 characters identify a browser; the rest is never stored.
    return RequestClient(client_ip(request), str(request.META.get("HTTP_USER_AGENT", ""))[:512])
