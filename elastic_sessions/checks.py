"""System checks for ``ELASTIC_SESSIONS`` and the session set-up around it.

Ids are stable and never reused; docs/checks.md lists each with its fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from .conf import DEFAULTS, REMOVED, elastic_settings
from .connection import SUPPORTED_SCHEMES
from .geo import import_locator

ENGINES = ("elastic_sessions.backends.redis", "elastic_sessions.backends.hybrid")
OUR_MIDDLEWARE = "elastic_sessions.middleware.SessionMiddleware"
DJANGO_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"

E001 = "elastic_sessions.E001"  # ELASTIC_SESSIONS is not a dict
E002 = "elastic_sessions.E002"  # unknown key
E003 = "elastic_sessions.E003"  # removed key
E004 = "elastic_sessions.E004"  # REDIS_URL unusable
E005 = "elastic_sessions.E005"  # a value of the wrong type or range
E006 = "elastic_sessions.E006"  # KEY_PREFIX unsafe for key names / hash tags
E007 = "elastic_sessions.E007"  # CACHE_ALIAS not a django-redis cache
E008 = "elastic_sessions.E008"  # IP_LOCATOR not importable or not callable
E009 = "elastic_sessions.E009"  # a topology that cannot work (Sentinel + Cluster, db on Cluster)
W001 = "elastic_sessions.W001"  # engine set, Django's session middleware in use
W002 = "elastic_sessions.W002"  # ABSOLUTE_TIMEOUT shorter than SESSION_COOKIE_AGE
W003 = "elastic_sessions.W003"  # TLS options given for a non-TLS URL
# Deploy checks (check --deploy) of the session cookie, for our engines.
W004 = "elastic_sessions.W004"  # SESSION_COOKIE_SECURE is not True
W005 = "elastic_sessions.W005"  # SESSION_COOKIE_HTTPONLY is not True
W006 = "elastic_sessions.W006"  # SESSION_COOKIE_SAMESITE unset: no SameSite attribute
W007 = "elastic_sessions.W007"  # SESSION_COOKIE_SAMESITE "None" without Secure
W008 = "elastic_sessions.W008"  # a __Host-/__Secure- cookie name whose rules are not met

_TYPED_SETTINGS = (
    "CACHE_ALIAS", "USERNAME", "PASSWORD", "SOCKET_TIMEOUT", "SOCKET_CONNECT_TIMEOUT",
    "RETRIES", "MAX_CONNECTIONS", "HEALTH_CHECK_INTERVAL", "SSL_CA_CERTS",
    "SSL_CERTFILE", "SSL_KEYFILE", "SSL_CERT_REQS", "KEY_PREFIX", "STORAGE_ID_SECRET",
    "ABSOLUTE_TIMEOUT", "TOUCH_INTERVAL", "RETRY_AFTER", "COMPRESS_MIN_BYTES",
    "SSL_CHECK_HOSTNAME", "BREAKER_PROBE_INTERVAL", "DATABASE_TOUCH_DRIFT",
    "PROXY_COUNT", "IP_LOCATOR", "MASKED_KEYS", "LISTING_INDEX", "ENCRYPTION_KEYS",
    "MAX_SESSIONS_PER_USER", "SESSION_LIMIT_POLICY", "BIND_USER_AGENT", "BIND_IPV4_PREFIX",
    "BIND_IPV6_PREFIX", "STAFF_IDLE_TIMEOUT", "STAFF_ABSOLUTE_TIMEOUT", "SENTINELS",
    "SENTINEL_SERVICE", "SENTINEL_USERNAME", "SENTINEL_PASSWORD", "CLUSTER", "CLUSTER_NODES",
)  # fmt: skip


def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    raw: object = getattr(settings, "ELASTIC_SESSIONS", {})
    if not isinstance(raw, dict):
        return [
            checks.Error(
                f"ELASTIC_SESSIONS must be a dict, not {type(raw).__name__}.",
                hint='Use for example ELASTIC_SESSIONS = {"REDIS_URL": "redis://127.0.0.1:6379/0"}.',
                id=E001,
            )
        ]
    errors: list[checks.CheckMessage] = []
    errors += _check_keys(raw)
    errors += _check_url(raw)
    errors += _check_values()
    errors += _check_prefix()
    errors += _check_cache_alias()
    errors += _check_timeouts()
    errors += _check_locator()
    errors += _check_topology()
    return errors


def _check_topology() -> list[checks.CheckMessage]:
    try:
        cluster, sentinels = elastic_settings.CLUSTER, elastic_settings.SENTINELS
        url = elastic_settings.REDIS_URL
    except ImproperlyConfigured:
        return []  # reported as E005
    problem = None
    if cluster and sentinels:
        problem = "CLUSTER and SENTINELS are both set; a Redis Cluster fails over by itself."
    elif cluster and urlsplit(url).path.strip("/") not in {"", "0"}:
        problem = "CLUSTER is set but REDIS_URL selects a database other than 0."
    if problem is None:
        return []
    return [
        checks.Error(
            f"ELASTIC_SESSIONS: {problem}",
            hint="Use Sentinel (SENTINELS) or Cluster (CLUSTER), not both; a cluster has "
            "database 0 only (redis://host:port/0).",
            id=E009,
        )
    ]


def _check_locator() -> list[checks.CheckMessage]:
    try:
        path = elastic_settings.IP_LOCATOR
    except ImproperlyConfigured:
        return []  # reported as E005
    if path is None:
        return []
    try:
        import_locator(path)
    except ImproperlyConfigured as err:
        return [
            checks.Error(
                str(err),
                hint="Point IP_LOCATOR at a function such as 'myproject.geo.city_of', "
                "or remove it to use GeoIP2 (GEOIP_PATH) or no location.",
                id=E008,
            )
        ]
    return []


def _check_keys(raw: dict[object, object]) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for key in raw:
        name = str(key)
        if name in DEFAULTS:
            continue
        if name in REMOVED:
            errors.append(
                checks.Error(
                    f"ELASTIC_SESSIONS[{name!r}] is no longer supported.",
                    hint=f"Rename it to {REMOVED[name]!r}.",
                    id=E003,
                )
            )
            continue
        close = difflib.get_close_matches(name, DEFAULTS, n=1)
        errors.append(
            checks.Error(
                f"ELASTIC_SESSIONS has an unknown key {name!r}.",
                hint=(f"Did you mean {close[0]!r}? " if close else "")
                + "Known keys: "
                + ", ".join(sorted(DEFAULTS))
                + ".",
                id=E002,
            )
        )
    return errors


def _check_url(raw: dict[object, object]) -> list[checks.CheckMessage]:
    url = raw.get("REDIS_URL", DEFAULTS["REDIS_URL"])
    problem = None
    if not isinstance(url, str):
        problem = f"must be a string, not {type(url).__name__}"
    else:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as err:
            problem = f"cannot be parsed ({err})"
        else:
            if parts.scheme not in SUPPORTED_SCHEMES:
                problem = f"has the unsupported scheme {parts.scheme or '(none)'!r}"
            elif parts.scheme == "unix" and not parts.path:
                problem = "names no socket path"
            elif parts.scheme != "unix" and not parts.hostname:
                problem = "names no host"
    if problem is None:
        if isinstance(url, str) and urlsplit(url).scheme != "rediss":
            tls = [k for k in ("SSL_CA_CERTS", "SSL_CERTFILE", "SSL_KEYFILE") if raw.get(k)]
            if tls:
                return [
                    checks.Warning(
                        f"ELASTIC_SESSIONS sets {', '.join(tls)} but REDIS_URL is not rediss://.",
                        hint="Use a rediss:// URL to connect with TLS, or remove the TLS options.",
                        id=W003,
                    )
                ]
        return []
    return [
        checks.Error(
            f"ELASTIC_SESSIONS['REDIS_URL'] {problem}.",
            hint="Use redis://[user:password@]host:port/db, rediss://... for TLS, "
            "or unix:///path/to/redis.sock?db=0.",
            id=E004,
        )
    ]


def _check_values() -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for name in _TYPED_SETTINGS:
        try:
            getattr(elastic_settings, name)
        except ImproperlyConfigured as err:
            errors.append(
                checks.Error(
                    str(err),
                    hint=f"The default is {DEFAULTS[name]!r}; see docs/configuration.md.",
                    id=E005,
                )
            )
    return errors


def _check_prefix() -> list[checks.CheckMessage]:
    try:
        prefix = elastic_settings.KEY_PREFIX
    except ImproperlyConfigured:
        return []  # reported as E005
    if any(char in prefix for char in "{}*?[] \t\r\n\x00"):
        return [
            checks.Error(
                f"ELASTIC_SESSIONS['KEY_PREFIX'] = {prefix!r} contains characters that "
                "break Redis Cluster hash tags or SCAN patterns.",
                hint='Use letters, digits, ":", "-" or "_", for example "es" or "myapp:es".',
                id=E006,
            )
        ]
    return []


def _check_cache_alias() -> list[checks.CheckMessage]:
    try:
        alias = elastic_settings.CACHE_ALIAS
    except ImproperlyConfigured:
        return []
    if alias is None:
        return []
    backend = settings.CACHES.get(alias, {}).get("BACKEND")
    if backend != "django_redis.cache.RedisCache":
        found = f"its BACKEND is {backend!r}" if backend else "it is not in CACHES"
        return [
            checks.Error(
                f"ELASTIC_SESSIONS['CACHE_ALIAS'] = {alias!r} cannot be used: {found}.",
                hint="Name a CACHES alias whose BACKEND is 'django_redis.cache.RedisCache', "
                "or remove CACHE_ALIAS and set REDIS_URL.",
                id=E007,
            )
        ]
    return []


def _check_timeouts() -> list[checks.CheckMessage]:
    try:
        absolute = elastic_settings.ABSOLUTE_TIMEOUT
    except ImproperlyConfigured:
        return []
    if absolute < settings.SESSION_COOKIE_AGE:
        return [
            checks.Warning(
                f"ELASTIC_SESSIONS['ABSOLUTE_TIMEOUT'] ({absolute} s) is shorter than "
                f"SESSION_COOKIE_AGE ({settings.SESSION_COOKIE_AGE} s).",
                hint="Sessions will end at the absolute timeout however active they are. "
                "Raise ABSOLUTE_TIMEOUT or lower SESSION_COOKIE_AGE if that is not intended.",
                id=W002,
            )
        ]
    return []


def check_engine_and_middleware(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    if settings.SESSION_ENGINE not in ENGINES:
        return []
    middleware = list(settings.MIDDLEWARE)
    if DJANGO_MIDDLEWARE in middleware and OUR_MIDDLEWARE not in middleware:
        return [
            checks.Warning(
                f"SESSION_ENGINE is {settings.SESSION_ENGINE!r} but MIDDLEWARE uses "
                "Django's own SessionMiddleware.",
                hint=f"Replace {DJANGO_MIDDLEWARE!r} with {OUR_MIDDLEWARE!r}: it answers "
                "503 (keeping the cookie) while Redis is down, instead of a 500, and "
                "refreshes the cookie when the idle expiry slides.",
                id=W001,
            )
        ]
    return []


def check_session_cookie(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Deploy check: the session cookie's flags, with one of our engines.

    Django's own security.W010-W015 (django/core/checks/security/sessions.py) fire only
    when ``"django.contrib.sessions" in settings.INSTALLED_APPS`` (W010, W013) or
    ``"django.contrib.sessions.middleware.SessionMiddleware" in settings.MIDDLEWARE``
    (W011, W014; W012 and W015 when both hold), compared as literal strings.  Our
    installation needs neither (we swap the middleware path), so for our users they
    stay silent; W004 and W005 take their place, and defer to them when they do fire,
    so a problem is reported once.  Django checks no SameSite and no cookie prefix.
    """
    if settings.SESSION_ENGINE not in ENGINES:
        return []
    warnings: list[checks.CheckMessage] = []
    secure = settings.SESSION_COOKIE_SECURE is True
    django_reports = (
        "django.contrib.sessions" in settings.INSTALLED_APPS
        or DJANGO_MIDDLEWARE in settings.MIDDLEWARE
    )
    if not secure and not django_reports:
        warnings.append(
            checks.Warning(
                "SESSION_COOKIE_SECURE is not True: the session cookie is also sent over "
                "plain HTTP, where anyone on the network can read it and hijack the session.",
                hint="Set SESSION_COOKIE_SECURE = True and serve the site over HTTPS only.",
                id=W004,
            )
        )
    if settings.SESSION_COOKIE_HTTPONLY is not True and not django_reports:
        warnings.append(
            checks.Warning(
                "SESSION_COOKIE_HTTPONLY is not True: JavaScript can read the session "
                "cookie, so one cross-site scripting flaw hands out sessions.",
                hint="Set SESSION_COOKIE_HTTPONLY = True (Django's default).",
                id=W005,
            )
        )
    samesite: object = settings.SESSION_COOKIE_SAMESITE
    if not samesite:
        warnings.append(
            checks.Warning(
                f"SESSION_COOKIE_SAMESITE is {samesite!r}: the cookie has no SameSite "
                "attribute, so browsers without a Lax default send it with cross-site "
                "requests (cross-site request forgery).",
                hint='Set SESSION_COOKIE_SAMESITE = "Lax" (Django\'s default) or "Strict".',
                id=W006,
            )
        )
    elif isinstance(samesite, str) and samesite.lower() == "none" and not secure:
        warnings.append(
            checks.Warning(
                'SESSION_COOKIE_SAMESITE is "None" but SESSION_COOKIE_SECURE is not True: '
                "browsers refuse a SameSite=None cookie without Secure, so nobody stays "
                "signed in.",
                hint='Set SESSION_COOKIE_SECURE = True, or SESSION_COOKIE_SAMESITE = "Lax" '
                "if the site needs no cross-site session.",
                id=W007,
            )
        )
    warnings += _check_cookie_prefix(secure)
    return warnings


def _check_cookie_prefix(secure: bool) -> list[checks.CheckMessage]:
    # Cookie name prefixes (RFC 6265bis, section 4.1.3): a browser drops a
    # cookie whose name promises what its attributes do not keep.
    name = str(settings.SESSION_COOKIE_NAME)
    unmet = []
    if name.lower().startswith(("__host-", "__secure-")) and not secure:
        unmet.append("SESSION_COOKIE_SECURE = True")
    if name.lower().startswith("__host-"):
        if settings.SESSION_COOKIE_DOMAIN is not None:
            unmet.append("SESSION_COOKIE_DOMAIN = None")
        if settings.SESSION_COOKIE_PATH != "/":
            unmet.append('SESSION_COOKIE_PATH = "/"')
    if not unmet:
        return []
    return [
        checks.Warning(
            f"SESSION_COOKIE_NAME {name!r} has a prefix whose rules the cookie breaks: "
            "browsers will refuse it, so nobody stays signed in.",
            hint=f"Set {', '.join(unmet)}, or choose a name without the prefix.",
            id=W008,
        )
    ]
