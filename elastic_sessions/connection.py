"""Redis clients for the engines: one sync pool per process, one async per loop.

``redis-py`` pools notice a fork and reconnect, so a process-global pool is safe
under pre-forking servers.  Async clients are bound to the event loop that made
them, hence one per loop, disconnected when that loop shuts down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from contextlib import suppress
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)

from .conf import elastic_settings
from .exceptions import SessionStoreUnavailable

logger = logging.getLogger(__name__)

SUPPORTED_SCHEMES = ("redis", "rediss", "unix")

# Errors that mean "the store cannot serve now", as opposed to a bug (any other
# ResponseError, e.g. a wrong type or a script error).
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # includes BusyLoading, Authentication
    redis.exceptions.TimeoutError,
    OutOfMemoryError,
    ReadOnlyError,
    ClusterDownError,  # includes MasterDown
    SlotNotCoveredError,  # a slot map taken while the cluster changed shape
    TryAgainError,
)

_sync_client: redis.Redis | None = None
# Whether we made _sync_client (and so may close it) or borrowed django-redis'.
_sync_client_owned = False
_async_clients: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
# Clients forgotten by reset_clients() whose loop could not close them yet (it
# was idle while another loop ran); they close when their loop shuts down.
_retired: set[_LoopClient] = set()
# reset_clients() inside a running loop schedules the close: keep the task.
_closing_tasks: set[asyncio.Task[None]] = set()

_CREDENTIALS = ("username", "password")


class translate_outages:
    """Re-raise an outage as :class:`SessionStoreUnavailable`, naming ``action``.

    A class, not ``@contextmanager``: it wraps every Redis call of every
    request, and a generator-based context manager costs several times more.
    """

    __slots__ = ("action",)

    def __init__(self, action: str) -> None:
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, _tb: Any
    ) -> None:
        if err is not None and is_outage(err):
            raise SessionStoreUnavailable(
                _redact(f"Redis could not {self.action}: {type(err).__name__}: {err}")
            ) from err


def is_outage(err: BaseException) -> bool:
    """Whether ``err`` means "the store cannot serve now" (see OUTAGE_ERRORS)."""
    if isinstance(err, OUTAGE_ERRORS):
        return True
    # redis-py's cluster clients wrap "no node answered" (when they first load
    # the slot map, or reload it) in a RedisClusterException raised from the
    # last connection error.
    return isinstance(err, RedisClusterException) and isinstance(err.__cause__, OUTAGE_ERRORS)


def _redact(message: str) -> str:
    # redis-py's own messages hold no password today; this keeps ours clean even
    # if a future one echoes a URL or an AUTH argument.
    for secret in (elastic_settings.PASSWORD, _url_credentials()[1].get("password")):
        if secret:
            message = message.replace(secret, "***")
    return message


def _url_credentials() -> tuple[str, dict[str, str]]:
    """REDIS_URL without user and password, and those two as redis-py would read them."""
    parts = urlsplit(elastic_settings.REDIS_URL)
    query = parse_qsl(parts.query)
    credentials: dict[str, str] = {}
    for name, value in query:
        if name in _CREDENTIALS:
            credentials.setdefault(name, value)  # redis-py reads the first one
    # As in redis-py, the user and password before "@" win over the query string.
    if parts.username:
        credentials["username"] = unquote(parts.username)
    if parts.password:
        credentials["password"] = unquote(parts.password)
    if not credentials:
        return elastic_settings.REDIS_URL, credentials
    # Built by hand: urlunsplit() turns "unix:///path" into "unix:/path".
    url = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    rest = urlencode([(name, value) for name, value in query if name not in _CREDENTIALS])
    return url + (f"?{rest}" if rest else ""), credentials


def connection_url() -> str:
    """``REDIS_URL`` without credentials: they travel in :func:`connection_kwargs`."""
    return _url_credentials()[0]


def connection_kwargs() -> dict[str, Any]:
    """Client options from ``ELASTIC_SESSIONS``.

    ``USERNAME`` and ``PASSWORD`` win over the user and password in ``REDIS_URL``
    (before the ``@`` or in the query string); each one left ``None`` keeps the URL's.
    Any other redis-py option in the URL's query string wins over these.
    Pass the result with :func:`connection_url`, never with the raw ``REDIS_URL``.
    """
    scheme = urlsplit(elastic_settings.REDIS_URL).scheme
    if scheme not in SUPPORTED_SCHEMES:
        raise ImproperlyConfigured(
            "ELASTIC_SESSIONS['REDIS_URL'] must start with redis://, rediss:// or "
            f"unix://, not {scheme + '://' if scheme else 'nothing'}."
        )
    # from_url() lets every URL part win over keyword arguments, so the URL's
    # credentials leave the URL and become arguments the settings can replace.
    kwargs: dict[str, Any] = _url_credentials()[1]
    kwargs |= {
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
            # Without a certificate check there is no name to check either.
            ssl_check_hostname=elastic_settings.SSL_CHECK_HOSTNAME
            and elastic_settings.SSL_CERT_REQS != "none",
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
    global _sync_client, _sync_client_owned
    if _sync_client is None:
        alias = elastic_settings.CACHE_ALIAS
        if alias is not None:
            _sync_client, _sync_client_owned = _cache_alias_client(alias), False
        else:
            _sync_client, _sync_client_owned = _new_sync_client(), True
    return _sync_client


def _new_sync_client() -> redis.Redis:
    kwargs = connection_kwargs()
    # redis-py's Cluster and Sentinel classes are untyped: built as Any, handed
    # out as Redis (the storage calls only what both share; storage.wire routes
    # raw commands per node itself).
    factory: Any
    if elastic_settings.CLUSTER:
        factory = redis.cluster
        seeds = [factory.ClusterNode(host, port) for host, port in _cluster_seeds()]
        client = factory.RedisCluster(
            url=connection_url(), startup_nodes=seeds, retry=_sync_retry(), **_without_db(kwargs)
        )
    elif elastic_settings.SENTINELS:
        factory = redis.sentinel
        sentinel = factory.Sentinel(
            list(elastic_settings.SENTINELS), sentinel_kwargs=_sentinel_kwargs(kwargs)
        )
        client = sentinel.master_for(
            elastic_settings.SENTINEL_SERVICE,
            redis_class=redis.Redis,
            retry=_sync_retry(),
            **_url_options() | kwargs,
        )
    else:
        client = redis.Redis.from_url(connection_url(), retry=_sync_retry(), **kwargs)
    return cast(redis.Redis, client)


def _new_async_client() -> redis.asyncio.Redis:
    kwargs = connection_kwargs()
    factory: Any
    if elastic_settings.CLUSTER:
        factory = redis.asyncio.cluster
        seeds = [factory.ClusterNode(host, port) for host, port in _cluster_seeds()]
        client = factory.RedisCluster.from_url(
            connection_url(), startup_nodes=seeds, retry=_async_retry(), **_without_db(kwargs)
        )
    elif elastic_settings.SENTINELS:
        factory = redis.asyncio.sentinel
        sentinel = factory.Sentinel(
            list(elastic_settings.SENTINELS), sentinel_kwargs=_sentinel_kwargs(kwargs)
        )
        client = sentinel.master_for(
            elastic_settings.SENTINEL_SERVICE,
            redis_class=redis.asyncio.Redis,
            retry=_async_retry(),
            **_url_options() | kwargs,
        )
    else:
        client = redis.asyncio.Redis.from_url(connection_url(), retry=_async_retry(), **kwargs)
    return cast(redis.asyncio.Redis, client)


def _cluster_seeds() -> list[tuple[str, int]]:
    return list(elastic_settings.CLUSTER_NODES)


def _without_db(kwargs: dict[str, Any]) -> dict[str, Any]:
    # A cluster has one database; max_connections is per node there.
    return {name: value for name, value in kwargs.items() if name != "db"}


def _url_options() -> dict[str, Any]:
    """What REDIS_URL says beyond host and port (db, TLS), for Sentinel clients:
    the sentinels name the host and port."""
    parts = urlsplit(connection_url())
    options: dict[str, Any] = {}
    if parts.path.strip("/").isdigit():
        options["db"] = int(parts.path.strip("/"))
    if parts.scheme == "rediss":
        options["ssl"] = True
    return options


def _sentinel_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    # The sentinels are asked with the same timeouts and TLS, and their own
    # credentials (a sentinel's ACL user is rarely the data nodes').
    options = {
        name: value for name, value in kwargs.items() if name.startswith(("socket_", "ssl_"))
    }
    if urlsplit(connection_url()).scheme == "rediss":
        options["ssl"] = True
    if elastic_settings.SENTINEL_USERNAME is not None:
        options["username"] = elastic_settings.SENTINEL_USERNAME
    if elastic_settings.SENTINEL_PASSWORD is not None:
        options["password"] = elastic_settings.SENTINEL_PASSWORD
    return options


def is_cluster(client: object) -> bool:
    """True for a Redis Cluster client (sync or async)."""
    return isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))


def primaries(client: object) -> list[redis.Redis]:
    """One client per primary that holds keys: the client itself, or, on Redis
    Cluster, a client of each primary node (for SCAN and other per-node work:
    a cluster's keyspace is the union of its primaries')."""
    if isinstance(client, redis.cluster.RedisCluster):
        cluster: Any = client
        return [cluster.get_redis_connection(node) for node in cluster.get_primaries()]
    assert isinstance(client, redis.Redis)
    return [client]


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


class _LoopClient:
    """An event loop's async client, and the async generator that closes it.

    Event loops have no close callback, but ``asyncio.run()``, ``asyncio.Runner``,
    asgiref and pytest-asyncio all call ``loop.shutdown_asyncgens()`` before
    ``loop.close()``: a generator parked at its ``yield`` is closed there, on its
    own loop, while awaiting still works.  The loop only holds it weakly.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, client: redis.asyncio.Redis) -> None:
        self.loop = loop
        self.client = client
        self._loop_closed = False
        self._closer = self._close_at_shutdown()
        # asend() is what hands the generator to the running loop; driving it by
        # hand to its yield needs no await, so this works from sync code.
        with suppress(StopIteration):
            self._closer.asend(None).send(None)

    async def _close_at_shutdown(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            # The generator references the loop (its finalizer hook): forget it, or
            # the registry would keep every loop alive.
            if _async_clients.get(self.loop) is self:
                del _async_clients[self.loop]
            _retired.discard(self)
            if not self._loop_closed:
                await self._disconnect()

    async def _disconnect(self) -> None:
        try:
            if is_cluster(self.client):
                await self.client.aclose()  # a cluster client closes its nodes' pools
            else:
                # Always the pool too: a pool mirrored from django-redis is ours as well.
                await self.client.aclose(close_connection_pool=True)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as err:
            logger.debug("Closing an async Redis client failed: %s", type(err).__name__)

    def close(self) -> None:
        """Disconnect on the client's own loop, as soon as that loop allows."""
        running = _running_loop()
        if self.loop.is_closed():
            self._abandon()
        elif self.loop is running:
            task = self.loop.create_task(self._closer.aclose())
            _closing_tasks.add(task)
            task.add_done_callback(_closing_tasks.discard)
        elif self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self._closer.aclose(), self.loop)
        elif running is None:
            self.loop.run_until_complete(self._closer.aclose())
        else:
            # Another loop runs in this thread, so this one cannot run now: its
            # shutdown closes the client, or a later sweep abandons it.
            _retired.add(self)

    def _abandon(self) -> None:
        # A loop closed without shutdown_asyncgens(): a transport cannot be closed
        # without its loop, so the sockets are left to the garbage collector (which
        # warns about them).  Finishing the generator lets the loop be collected.
        self._loop_closed = True
        with suppress(StopIteration):
            self._closer.aclose().send(None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _sweep_closed_loops() -> None:
    for entry in [*_async_clients.values(), *_retired]:
        if entry.loop.is_closed():
            entry.close()


def get_async_client() -> redis.asyncio.Redis:
    """The async client of the running event loop, disconnected when the loop shuts down."""
    loop = asyncio.get_running_loop()
    entry = _async_clients.get(loop)
    if entry is None:
        _sweep_closed_loops()
        alias = elastic_settings.CACHE_ALIAS
        if alias is not None:
            client = _async_from_sync_pool(_cache_alias_client(alias))
        else:
            client = _new_async_client()
        entry = _async_clients[loop] = _LoopClient(loop, client)
    return entry.client


def reset_clients() -> None:
    """Close and forget every client (settings changed, or a test wants a fresh start).

    An async client is disconnected on its own loop: at once if that loop is idle,
    by a task if it is running.  Connections of a loop that was closed without
    ``shutdown_asyncgens()`` can no longer be closed; they are dropped.
    """
    global _sync_client  # noqa: PLW0603
    if _sync_client is not None and _sync_client_owned:
        _sync_client.close()
    _sync_client = None
    entries = [*_async_clients.values(), *_retired]
    _async_clients.clear()
    _retired.clear()
    for entry in entries:
        entry.close()


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in {"ELASTIC_SESSIONS", "CACHES", "SECRET_KEY"}:
        reset_clients()


setting_changed.connect(_on_setting_changed)
