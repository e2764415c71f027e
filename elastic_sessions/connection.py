"""Redis clients for the engines: one sync pool per process, one async per loop.

``redis-py`` pools notice a fork and reconnect, so a process-global pool is safe
under pre-forking servers.  Async clients are bound to the event loop that made
them, hence one per loop, dropped with the loop.
"""

from __future__ import annotations

import asyncio
import weakref
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
)

from .conf import elastic_settings
from .exceptions import SessionStoreUnavailable

SUPPORTED_SCHEMES = ("redis", "rediss", "unix")

# Errors that mean "the store cannot serve now", as opposed to a bug (any other
# ResponseError, e.g. a wrong type or a script error).
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # includes BusyLoading, Authentication
    redis.exceptions.TimeoutError,
    OutOfMemoryError,
    ReadOnlyError,
    ClusterDownError,  # includes MasterDown
    TryAgainError,
)

_sync_client: redis.Redis | None = None
# Whether we made _sync_client (and so may close it) or borrowed django-redis'.
_sync_client_owned = False
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
    weakref.WeakKeyDictionary()
)


@contextmanager
def translate_outages(action: str) -> Any:
    """Re-raise an outage as :class:`SessionStoreUnavailable`, naming ``action``."""
    try:
        yield
    except OUTAGE_ERRORS as err:
        raise SessionStoreUnavailable(
            f"Redis could not {action}: {type(err).__name__}: {err}"
        ) from err


def connection_kwargs() -> dict[str, Any]:
    """Client options from ``ELASTIC_SESSIONS`` (URL parts win unless overridden)."""
    scheme = urlsplit(elastic_settings.REDIS_URL).scheme
    if scheme not in SUPPORTED_SCHEMES:
        raise ImproperlyConfigured(
            "ELASTIC_SESSIONS['REDIS_URL'] must start with redis://, rediss:// or "
            f"unix://, not {scheme + '://' if scheme else 'nothing'}."
        )
    kwargs: dict[str, Any] = {
        "socket_timeout": elastic_settings.SOCKET_TIMEOUT,
        "socket_connect_timeout": elastic_settings.SOCKET_CONNECT_TIMEOUT,
        "max_connections": elastic_settings.MAX_CONNECTIONS,
        "health_check_interval": elastic_settings.HEALTH_CHECK_INTERVAL,
    }
    if elastic_settings.USERNAME is not None:
        kwargs["username"] = elastic_settings.USERNAME
    if elastic_settings.PASSWORD is not None:
        kwargs["password"] = elastic_settings.PASSWORD
    if scheme == "rediss":
        kwargs.update(
            ssl_ca_certs=elastic_settings.SSL_CA_CERTS,
            ssl_certfile=elastic_settings.SSL_CERTFILE,
            ssl_keyfile=elastic_settings.SSL_KEYFILE,
            ssl_cert_reqs=elastic_settings.SSL_CERT_REQS,
            ssl_check_hostname=elastic_settings.SSL_CHECK_HOSTNAME,
        )
    return kwargs


def _sync_retry() -> redis.retry.Retry:
    # One quick reconnect rides over a restarted server; more would only make
    # an outage slower to report.
    return redis.retry.Retry(NoBackoff(), elastic_settings.RETRIES)


def _async_retry() -> redis.asyncio.retry.Retry:
    return redis.asyncio.retry.Retry(NoBackoff(), elastic_settings.RETRIES)


def _cache_alias_client(alias: str) -> redis.Redis:
    try:
        from django_redis import get_redis_connection  # noqa: PLC0415 - optional
    except ImportError as err:
        raise ImproperlyConfigured(
            "ELASTIC_SESSIONS['CACHE_ALIAS'] needs django-redis: "
            "pip install 'django-elastic-sessions[django-redis]'."
        ) from err
    try:
        client: redis.Redis = get_redis_connection(alias)
    except NotImplementedError as err:
        raise ImproperlyConfigured(
            f"ELASTIC_SESSIONS['CACHE_ALIAS'] = {alias!r} is not a django-redis cache."
        ) from err
    return client


def get_client() -> redis.Redis:
    """The process-wide sync client."""
    global _sync_client, _sync_client_owned  # noqa: PLW0603 - one pool per process
    if _sync_client is None:
        alias = elastic_settings.CACHE_ALIAS
        if alias is not None:
            _sync_client, _sync_client_owned = _cache_alias_client(alias), False
        else:
            _sync_client = redis.Redis.from_url(
                elastic_settings.REDIS_URL, retry=_sync_retry(), **connection_kwargs()
            )
            _sync_client_owned = True
    return _sync_client


# What an asyncio connection accepts of a sync pool's options (sync pools carry
# more: OCSP, maintenance notifications, parsers of their own).
_MIRRORED_KWARGS = frozenset({
    "host", "port", "path", "db", "username", "password", "client_name",
    "socket_timeout", "socket_connect_timeout", "socket_keepalive",
    "socket_keepalive_options", "health_check_interval", "encoding",
    "encoding_errors", "decode_responses", "protocol", "ssl_keyfile",
    "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_data",
    "ssl_check_hostname", "ssl_min_version", "ssl_ciphers",
})  # fmt: skip


def _async_from_sync_pool(client: redis.Redis) -> redis.asyncio.Redis:
    # django-redis has no asyncio client: mirror its pool's options instead.
    pool = client.connection_pool
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in _MIRRORED_KWARGS}
    sync_class = pool.connection_class
    if issubclass(sync_class, redis.connection.UnixDomainSocketConnection):
        connection_class: type[redis.asyncio.connection.AbstractConnection] = (
            redis.asyncio.connection.UnixDomainSocketConnection
        )
    elif issubclass(sync_class, redis.connection.SSLConnection):
        connection_class = redis.asyncio.connection.SSLConnection
    else:
        connection_class = redis.asyncio.connection.Connection
    async_pool = redis.asyncio.ConnectionPool(connection_class=connection_class, **kwargs)
    return redis.asyncio.Redis(connection_pool=async_pool, retry=_async_retry())


def get_async_client() -> redis.asyncio.Redis:
    """The async client of the running event loop."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        alias = elastic_settings.CACHE_ALIAS
        if alias is not None:
            client = _async_from_sync_pool(_cache_alias_client(alias))
        else:
            client = redis.asyncio.Redis.from_url(
                elastic_settings.REDIS_URL, retry=_async_retry(), **connection_kwargs()
            )
        _async_clients[loop] = client
    return client


def reset_clients() -> None:
    """Forget every client (settings changed, or a test wants a fresh start)."""
    global _sync_client  # noqa: PLW0603
    if _sync_client is not None and _sync_client_owned:
        _sync_client.close()
    _sync_client = None
    _async_clients.clear()


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in {"ELASTIC_SESSIONS", "CACHES", "SECRET_KEY"}:
        reset_clients()


setting_changed.connect(_on_setting_changed)
