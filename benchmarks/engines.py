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
DJANGO_CACHE = "django-cache"
REDIS_SESSIONS = "redis-sessions"
RAW_FLOOR = "raw-floor"
ENGINES = (OURS, DJANGO_CACHE, REDIS_SESSIONS, RAW_FLOOR)


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
    # Everything a created session leaves behind (deleted after each timed create).
    leftovers: Callable[[str], list[str]]


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
    from django.core.cache import caches

    from elastic_sessions.connection import get_client
    from elastic_sessions.keys import session_redis_key, storage_id, user_index_redis_key

    from .shapes import build

    ours = import_module("elastic_sessions.backends.redis").SessionStore
    django_cache = import_module("django.contrib.sessions.backends.cache").SessionStore
    redis_sessions = import_module("redis_sessions.session").SessionStore
    # The floor shares our engine's client: same hiredis parser, pool and options.
    RawFloorStore.client = get_client()
    cache = caches["default"]
    owner = build("200B")["_auth_user_id"]

    def ours_key(key: str) -> list[str]:
        return [session_redis_key(storage_id(key))]

    def cache_key(key: str) -> list[str]:
        return [str(cache.make_key(django_cache.cache_key_prefix + key))]

    available = {
        OURS: Engine(
            OURS,
            "elastic_sessions.backends.redis",
            ours,
            ours_key,
            lambda key: [*ours_key(key), user_index_redis_key(owner)],
        ),
        DJANGO_CACHE: Engine(
            DJANGO_CACHE,
            "django.contrib.sessions.backends.cache on django-redis (pickle)",
            django_cache,
            cache_key,
            cache_key,
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
