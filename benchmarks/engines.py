"""The compared engines behind one small adapter, and the raw redis-py floor.

Engine modules are imported only after Django is configured: two of them read
settings at import time.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Protocol

import redis

from .environment import SESSION_COOKIE_AGE

OURS = "elastic"
HYBRID = "hybrid"
DJANGO_CACHE = "django-cache"
CACHED_DB = "cached-db"
DJANGO_DB = "django-db"
REDIS_SESSIONS = "redis-sessions"
RAW_FLOOR = "raw-floor"
ENGINES = (OURS, HYBRID, DJANGO_CACHE, CACHED_DB, DJANGO_DB, REDIS_SESSIONS, RAW_FLOOR)


class SessionLike(Protocol):
    """What Django's ``SessionMiddleware`` and a view use of a session."""

    accessed: bool
    modified: bool

    @property
    def session_key(self) -> str | None: ...

    def get(self, key: str, default: Any = None) -> Any: ...

    def __setitem__(self, key: str, value: Any) -> None: ...

    def update(self, dict_: dict[str, Any]) -> None: ...

    def is_empty(self) -> bool: ...

    def get_expire_at_browser_close(self) -> bool: ...

    def get_expiry_age(self) -> int: ...

    def save(self) -> None: ...


@dataclass(frozen=True)
class Engine:
    name: str
    label: str
    store: Callable[[str | None], SessionLike]
    # The Redis keys one session occupies (what MEMORY USAGE measures).
    session_keys: Callable[[str], list[str]]
    # Everything a created session leaves behind in Redis (deleted after each timed create).
    leftovers: Callable[[str], list[str]]
    # Deletes what a session left in the database (None: the engine has no database).
    delete_rows: Callable[[str], None] | None = None

    def discard(self, admin: redis.Redis, key: str) -> None:
        """Untimed upkeep: delete everything the session ``key`` left, in Redis and the database."""
        names = self.leftovers(key)
        if names:
            admin.delete(*names)
        if self.delete_rows is not None:
            self.delete_rows(key)


class RawFloorStore:
    """The least a Redis session store can do: GET + ``json.loads``, ``json.dumps`` + SET EX.

    No signing, no change tracking, no expiry policy: only what it takes to play
    the part of a session in the middleware's request cycle.
    """

    prefix = "raw:"
    client: redis.Redis

    def __init__(self, session_key: str | None = None) -> None:
        self.session_key = session_key
        self.accessed = False
        self.modified = False
        self._data: dict[str, Any] | None = None

    def _session(self) -> dict[str, Any]:
        if self._data is None:
            self.accessed = True
            raw = self.client.get(self.prefix + self.session_key) if self.session_key else None
            if raw is None:
                self.session_key = None
                self._data = {}
            else:
                self._data = json.loads(raw)
        return self._data

    def get(self, key: str, default: Any = None) -> Any:
        return self._session().get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        self._session()[key] = value
        self.modified = True

    def update(self, dict_: dict[str, Any]) -> None:
        self._session().update(dict_)
        self.modified = True

    def is_empty(self) -> bool:
        return self.session_key is None and not self._data

    def get_expire_at_browser_close(self) -> bool:
        return False

    def get_expiry_age(self) -> int:
        return SESSION_COOKIE_AGE

    def save(self) -> None:
        blob = json.dumps(self._session(), separators=(",", ":"))
        if self.session_key is not None:
            self.client.set(self.prefix + self.session_key, blob, ex=SESSION_COOKIE_AGE)
            return
        while True:  # a new key: atomic create, like every engine here
            key = secrets.token_hex(16)
            if self.client.set(self.prefix + key, blob, ex=SESSION_COOKIE_AGE, nx=True):
                self.session_key = key
                return


def load_engines(names: tuple[str, ...]) -> list[Engine]:
    """The adapters of the named engines (Django must be configured)."""
    from django.contrib.sessions.models import Session
    from django.core.cache import caches

    from elastic_sessions.connection import get_client
    from elastic_sessions.keys import session_redis_key, storage_id, user_index_redis_key
    from elastic_sessions.models import DurableSession, RedisInvalidation

    from .shapes import build

    ours = import_module("elastic_sessions.backends.redis").SessionStore
    hybrid = import_module("elastic_sessions.backends.hybrid").SessionStore
    django_cache = import_module("django.contrib.sessions.backends.cache").SessionStore
    cached_db = import_module("django.contrib.sessions.backends.cached_db").SessionStore
    django_db = import_module("django.contrib.sessions.backends.db").SessionStore
    redis_sessions = import_module("redis_sessions.session").SessionStore
    # The floor shares our engine's client: same hiredis parser, pool and options.
    RawFloorStore.client = get_client()
    cache = caches["default"]
    owner = build("200B")["_auth_user_id"]

    def ours_key(key: str) -> list[str]:
        return [session_redis_key(storage_id(key))]

    def cache_key(key: str) -> list[str]:
        return [str(cache.make_key(django_cache.cache_key_prefix + key))]

    def cached_db_key(key: str) -> list[str]:
        return [str(cache.make_key(cached_db.cache_key_prefix + key))]

    def delete_durable(key: str) -> None:
        sid = storage_id(key)
        # Field rows go with their session (ON DELETE CASCADE); a write made while
        # the breaker was open also queued the session for a Redis invalidation.
        DurableSession.objects.filter(pk=sid).delete()
        RedisInvalidation.objects.filter(pk=sid).delete()

    def delete_django_row(key: str) -> None:
        Session.objects.filter(pk=key).delete()

    available = {
        OURS: Engine(
            OURS,
            "elastic_sessions.backends.redis",
            ours,
            ours_key,
            lambda key: [*ours_key(key), user_index_redis_key(owner)],
        ),
        # The hybrid engine keeps no per-user index in Redis (the rows' user_id is).
        HYBRID: Engine(
            HYBRID,
            "elastic_sessions.backends.hybrid (SQLite + Redis copy)",
            hybrid,
            ours_key,
            ours_key,
            delete_durable,
        ),
        DJANGO_CACHE: Engine(
            DJANGO_CACHE,
            "django.contrib.sessions.backends.cache on django-redis (pickle)",
            django_cache,
            cache_key,
            cache_key,
        ),
        CACHED_DB: Engine(
            CACHED_DB,
            "django.contrib.sessions.backends.cached_db (SQLite + django-redis)",
            cached_db,
            cached_db_key,
            cached_db_key,
            delete_django_row,
        ),
        DJANGO_DB: Engine(
            DJANGO_DB,
            "django.contrib.sessions.backends.db (SQLite only)",
            django_db,
            lambda key: [],
            lambda key: [],
            delete_django_row,
        ),
        REDIS_SESSIONS: Engine(
            REDIS_SESSIONS,
            "redis_sessions.session (django-redis-sessions)",
            redis_sessions,
            lambda key: [key],
            lambda key: [key],
        ),
        RAW_FLOOR: Engine(
            RAW_FLOOR,
            "raw redis-py: GET + json.loads / json.dumps + SET EX",
            RawFloorStore,
            lambda key: [RawFloorStore.prefix + key],
            lambda key: [RawFloorStore.prefix + key],
        ),
    }
    return [available[name] for name in names]


def close_clients() -> None:
    """Close the pools the engines opened (before their server goes away)."""
    from django.core.cache import caches

    from elastic_sessions.connection import reset_clients

    reset_clients()
    caches["default"].close()
