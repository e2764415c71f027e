"""The ``ELASTIC_SESSIONS`` settings: defaults, lazy reads, one parsed view.

Each setting is parsed on first use and kept: the engines read several per
request.  ``setting_changed`` (``override_settings`` in tests) clears them.
Validation lives in :mod:`elastic_sessions.checks`; this module only trusts what
it narrows itself and raises ``ImproperlyConfigured`` for what it cannot use.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

DEFAULTS: dict[str, object] = {
    # Where sessions live.  Ignored when CACHE_ALIAS is set.
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    # Reuse the connection pool of a django-redis CACHES alias instead.
    "CACHE_ALIAS": None,
    # Override the URL's ACL user and password (keeps secrets out of URLs).
    "USERNAME": None,
    "PASSWORD": None,
    # Seconds.  Short on purpose: a slow store must fail fast, not hang workers.
    "SOCKET_TIMEOUT": 0.5,
    "SOCKET_CONNECT_TIMEOUT": 0.5,
    # Extra attempts after a connection error (one reconnect covers a restart).
    "RETRIES": 1,
    "MAX_CONNECTIONS": 100,
    "HEALTH_CHECK_INTERVAL": 30,
    # TLS (rediss://).  Paths to PEM files; CERT_REQS is required|optional|none.
    "SSL_CA_CERTS": None,
    "SSL_CERTFILE": None,
    "SSL_KEYFILE": None,
    "SSL_CERT_REQS": "required",
    "SSL_CHECK_HOSTNAME": True,
    # Every Redis key starts with this; keep it short, it is stored per session.
    "KEY_PREFIX": "es",
    # Secret for the keyed hash that turns a cookie into a storage id.
    # None derives one from SECRET_KEY.
    "STORAGE_ID_SECRET": None,
    # A session ends this many seconds after creation, however active it is.
    "ABSOLUTE_TIMEOUT": 30 * 24 * 3600,
    # Sliding expiry is refreshed at most once per this many seconds.
    "TOUCH_INTERVAL": 60,
    # Seconds a client is told to wait by the 503 sent while Redis is down.
    "RETRY_AFTER": 5,
    # Hybrid engine: once Redis fails, one request per this many seconds (per
    # process) probes it; every other request goes straight to the database.
    "BREAKER_PROBE_INTERVAL": 2.0,
    # Hybrid engine: a load's touch reaches the database only once it would move
    # the durable expiry by more than this many seconds (or a quarter of the
    # idle timeout, if that is less), so unchanged requests do not write there.
    "DATABASE_TOUCH_DRIFT": 600,
    # Serialized values of this many bytes or more are stored zlib-compressed
    # (when that saves an eighth or more).  0 turns compression off.
    "COMPRESS_MIN_BYTES": 256,
    # How many reverse proxies in front of Django append to X-Forwarded-For.
    # 0: a session's IP address is REMOTE_ADDR.  n: the n-th address from the
    # right of X-Forwarded-For (the one the outermost trusted proxy saw).
    "PROXY_COUNT": 0,
    # Dotted path to a callable(ip: str) -> str | None naming where an IP
    # address is ("Lisbon, Portugal"), for the "your sessions" page.  None:
    # Django's GeoIP2 when GEOIP_PATH is set and geoip2 is installed, else none.
    "IP_LOCATOR": None,
    # A regular expression (case-insensitive) matched against session keys:
    # the admin shows the values of matching keys masked.
    "MASKED_KEYS": "pass|secret|token|key|hash|signature|csrf|otp|card|ssn",
    # Redis engine: keep the two sorted sets of every session (by last seen, by
    # expiry) that let the admin list all sessions.  About 250 bytes a session.
    "LISTING_INDEX": True,
    # Encryption at rest of stored session values (AES-256-GCM).  Each entry is
    # a secret of at least 32 characters; the first encrypts, all decrypt
    # (rotation).  Empty: values are stored as serialized.
    "ENCRYPTION_KEYS": [],
    # At most this many sessions per signed-in user (0: no limit); a login past
    # it ends the user's oldest session ("evict_oldest") or is refused ("deny").
    "MAX_SESSIONS_PER_USER": 0,
    "SESSION_LIMIT_POLICY": "evict_oldest",
    # End a signed-in session used from another browser (user agent) or from
    # outside the network it signed in from (prefix length; 0: not bound).
    "BIND_USER_AGENT": False,
    "BIND_IPV4_PREFIX": 0,
    "BIND_IPV6_PREFIX": 0,
    # Stricter timeouts, in seconds, for sessions of staff users (None: the
    # site's own SESSION_COOKIE_AGE and ABSOLUTE_TIMEOUT).
    "STAFF_IDLE_TIMEOUT": None,
    "STAFF_ABSOLUTE_TIMEOUT": None,
    # Redis Sentinel: "host:port" of each sentinel, and the monitored service's
    # name.  With SENTINELS set, REDIS_URL only supplies db, TLS and credentials.
    "SENTINELS": [],
    "SENTINEL_SERVICE": "mymaster",
    # Credentials of the sentinels themselves (ACL user, password), if any.
    "SENTINEL_USERNAME": None,
    "SENTINEL_PASSWORD": None,
    # Redis Cluster: REDIS_URL names any node; CLUSTER_NODES adds more seeds.
    "CLUSTER": False,
    "CLUSTER_NODES": [],
}

# Keys that earlier designs used; reported by the checks with their replacement.
REMOVED: dict[str, str] = {
    "URL": "REDIS_URL",
    "PREFIX": "KEY_PREFIX",
    "TIMEOUT": "SOCKET_TIMEOUT",
}


def user_settings() -> dict[str, object]:
    """The raw ``ELASTIC_SESSIONS`` dict, or ``{}`` when unset or not a dict."""
    raw: object = getattr(django_settings, "ELASTIC_SESSIONS", {})
    return dict(raw) if isinstance(raw, dict) else {}


class Settings:
    """Typed, lazy view of ``ELASTIC_SESSIONS`` merged over :data:`DEFAULTS`."""

    def _get(self, name: str) -> object:
        return user_settings().get(name, DEFAULTS[name])

    def _optional_str(self, name: str) -> str | None:
        value = self._get(name)
        if value is None or isinstance(value, str):
            return value
        raise ImproperlyConfigured(f"ELASTIC_SESSIONS[{name!r}] must be a string.")

    def _number(self, name: str, *, allow_zero: bool = False) -> float:
        value = self._get(name)
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and (value > 0 or (allow_zero and value == 0))
        ):
            return float(value)
        expected = "a number >= 0" if allow_zero else "a positive number"
        raise ImproperlyConfigured(f"ELASTIC_SESSIONS[{name!r}] must be {expected}.")

    def _bool(self, name: str) -> bool:
        value = self._get(name)
        if not isinstance(value, bool):
            raise ImproperlyConfigured(f"ELASTIC_SESSIONS[{name!r}] must be True or False.")
        return value

    def _int(self, name: str, *, allow_zero: bool = False) -> int:
        value = self._number(name, allow_zero=allow_zero)
        if value != int(value):
            raise ImproperlyConfigured(f"ELASTIC_SESSIONS[{name!r}] must be a whole number.")
        return int(value)

    @cached_property
    def REDIS_URL(self) -> str:
        return self._optional_str("REDIS_URL") or str(DEFAULTS["REDIS_URL"])

    @cached_property
    def CACHE_ALIAS(self) -> str | None:
        return self._optional_str("CACHE_ALIAS")

    @cached_property
    def USERNAME(self) -> str | None:
        return self._optional_str("USERNAME")

    @cached_property
    def PASSWORD(self) -> str | None:
        return self._optional_str("PASSWORD")

    @cached_property
    def SOCKET_TIMEOUT(self) -> float:
        return self._number("SOCKET_TIMEOUT")

    @cached_property
    def SOCKET_CONNECT_TIMEOUT(self) -> float:
        return self._number("SOCKET_CONNECT_TIMEOUT")

    @cached_property
    def RETRIES(self) -> int:
        return self._int("RETRIES", allow_zero=True)

    @cached_property
    def MAX_CONNECTIONS(self) -> int:
        return self._int("MAX_CONNECTIONS")

    @cached_property
    def HEALTH_CHECK_INTERVAL(self) -> int:
        return self._int("HEALTH_CHECK_INTERVAL", allow_zero=True)

    @cached_property
    def SSL_CA_CERTS(self) -> str | None:
        return self._optional_str("SSL_CA_CERTS")

    @cached_property
    def SSL_CERTFILE(self) -> str | None:
        return self._optional_str("SSL_CERTFILE")

    @cached_property
    def SSL_KEYFILE(self) -> str | None:
        return self._optional_str("SSL_KEYFILE")

    @cached_property
    def SSL_CERT_REQS(self) -> str:
        value = self._optional_str("SSL_CERT_REQS") or "required"
        if value not in {"required", "optional", "none"}:
            raise ImproperlyConfigured(
                "ELASTIC_SESSIONS['SSL_CERT_REQS'] must be 'required', 'optional' or 'none'."
            )
        return value

    @cached_property
    def SSL_CHECK_HOSTNAME(self) -> bool:
        return self._bool("SSL_CHECK_HOSTNAME")

    @cached_property
    def KEY_PREFIX(self) -> str:
        value = self._optional_str("KEY_PREFIX")
        if value == "":
            # Not silently the default: an empty prefix would mix sessions
            # with whatever else the database holds.
            raise ImproperlyConfigured("ELASTIC_SESSIONS['KEY_PREFIX'] must not be empty.")
        return value or str(DEFAULTS["KEY_PREFIX"])

    @cached_property
    def STORAGE_ID_SECRET(self) -> str:
        secret = self._optional_str("STORAGE_ID_SECRET")
        return secret if secret else str(django_settings.SECRET_KEY)

    @cached_property
    def ABSOLUTE_TIMEOUT(self) -> int:
        return self._int("ABSOLUTE_TIMEOUT")

    @cached_property
    def TOUCH_INTERVAL(self) -> int:
        return self._int("TOUCH_INTERVAL", allow_zero=True)

    @cached_property
    def RETRY_AFTER(self) -> int:
        return self._int("RETRY_AFTER")

    @cached_property
    def BREAKER_PROBE_INTERVAL(self) -> float:
        return self._number("BREAKER_PROBE_INTERVAL")

    @cached_property
    def DATABASE_TOUCH_DRIFT(self) -> int:
        return self._int("DATABASE_TOUCH_DRIFT", allow_zero=True)

    @cached_property
    def COMPRESS_MIN_BYTES(self) -> int:
        return self._int("COMPRESS_MIN_BYTES", allow_zero=True)

    @cached_property
    def PROXY_COUNT(self) -> int:
        return self._int("PROXY_COUNT", allow_zero=True)

    @cached_property
    def IP_LOCATOR(self) -> str | None:
        return self._optional_str("IP_LOCATOR")

    @cached_property
    def MASKED_KEYS(self) -> str:
        value = self._optional_str("MASKED_KEYS")
        pattern = str(DEFAULTS["MASKED_KEYS"]) if value is None else value
        try:
            re.compile(pattern)
        except re.error as err:
            raise ImproperlyConfigured(
                f"ELASTIC_SESSIONS['MASKED_KEYS'] must be a regular expression: {err}."
            ) from None
        return pattern

    @cached_property
    def LISTING_INDEX(self) -> bool:
        return self._bool("LISTING_INDEX")

    @cached_property
    def ENCRYPTION_KEYS(self) -> tuple[str | None, ...]:
        value = self._get("ENCRYPTION_KEYS")
        # None first: decrypt with the others but write in the clear (turning
        # encryption off without signing anyone out).
        if isinstance(value, (list, tuple)) and all(
            (isinstance(key, str) and len(key) >= 32) or (key is None and index == 0)
            for index, key in enumerate(value)
        ):
            return tuple(value)
        raise ImproperlyConfigured(
            "ELASTIC_SESSIONS['ENCRYPTION_KEYS'] must be a list of secrets of at least 32 "
            "characters each (the first encrypts, all decrypt; None first writes in the clear)."
        )

    @cached_property
    def MAX_SESSIONS_PER_USER(self) -> int:
        return self._int("MAX_SESSIONS_PER_USER", allow_zero=True)

    @cached_property
    def SESSION_LIMIT_POLICY(self) -> str:
        value = self._get("SESSION_LIMIT_POLICY")
        if value not in {"evict_oldest", "deny"}:
            raise ImproperlyConfigured(
                "ELASTIC_SESSIONS['SESSION_LIMIT_POLICY'] must be 'evict_oldest' or 'deny'."
            )
        return str(value)

    @cached_property
    def BIND_USER_AGENT(self) -> bool:
        return self._bool("BIND_USER_AGENT")

    @cached_property
    def BIND_IPV4_PREFIX(self) -> int:
        return self._prefix("BIND_IPV4_PREFIX", 32)

    @cached_property
    def BIND_IPV6_PREFIX(self) -> int:
        return self._prefix("BIND_IPV6_PREFIX", 128)

    def _prefix(self, name: str, longest: int) -> int:
        value = self._int(name, allow_zero=True)
        if value > longest:
            raise ImproperlyConfigured(
                f"ELASTIC_SESSIONS[{name!r}] must be a prefix length from 0 to {longest}."
            )
        return value

    @cached_property
    def STAFF_IDLE_TIMEOUT(self) -> int | None:
        return None if self._get("STAFF_IDLE_TIMEOUT") is None else self._int("STAFF_IDLE_TIMEOUT")

    @cached_property
    def STAFF_ABSOLUTE_TIMEOUT(self) -> int | None:
        if self._get("STAFF_ABSOLUTE_TIMEOUT") is None:
            return None
        return self._int("STAFF_ABSOLUTE_TIMEOUT")

    def _host_ports(self, name: str) -> tuple[tuple[str, int], ...]:
        value = self._get(name)
        error = ImproperlyConfigured(
            f'ELASTIC_SESSIONS[{name!r}] must be a list of "host:port" strings.'
        )
        if not isinstance(value, (list, tuple)):
            raise error
        pairs = []
        for item in value:
            host, _, port = str(item).rpartition(":") if isinstance(item, str) else ("", "", "")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise error
            pairs.append((host.strip("[]"), int(port)))
        return tuple(pairs)

    @cached_property
    def SENTINELS(self) -> tuple[tuple[str, int], ...]:
        return self._host_ports("SENTINELS")

    @cached_property
    def SENTINEL_SERVICE(self) -> str:
        value = self._optional_str("SENTINEL_SERVICE")
        if not value:
            raise ImproperlyConfigured(
                "ELASTIC_SESSIONS['SENTINEL_SERVICE'] must name the service the sentinels monitor."
            )
        return value

    @cached_property
    def SENTINEL_USERNAME(self) -> str | None:
        return self._optional_str("SENTINEL_USERNAME")

    @cached_property
    def SENTINEL_PASSWORD(self) -> str | None:
        return self._optional_str("SENTINEL_PASSWORD")

    @cached_property
    def CLUSTER(self) -> bool:
        return self._bool("CLUSTER")

    @cached_property
    def CLUSTER_NODES(self) -> tuple[tuple[str, int], ...]:
        return self._host_ports("CLUSTER_NODES")

    def clear_cache(self) -> None:
        """Forget every parsed setting (the next read parses again)."""
        self.__dict__.clear()

    def as_dict(self) -> dict[str, Any]:
        """Every setting as the engines see it (secrets included: never log this)."""
        return {name: getattr(self, name) for name in DEFAULTS}


elastic_settings = Settings()


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in {"ELASTIC_SESSIONS", "SECRET_KEY"}:
        elastic_settings.clear_cache()


setting_changed.connect(_on_setting_changed)
