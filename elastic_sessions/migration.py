"""Move sessions from Django's own engines (``db``, ``cached_db``, ``cache``) into ours.

A session keeps its key, so the browser's cookie stays valid and nobody is signed
out by the switch.  Each session is created on the target atomically (never over
a session that already exists there) and, once the target holds it, removed from
the source, so a second run neither copies nor resurrects anything.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial, reduce
from importlib import import_module
from itertools import islice
from operator import or_
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.contrib.sessions.models import Session
from django.core import signing
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Q

from .backends.base import ElasticSessionBase
from .exceptions import SessionStoreUnavailable
from .keys import is_valid_session_key, storage_id

logger = logging.getLogger(__name__)

# A checkpoint is this many leading characters of the last session key handled:
# enough to resume the ordered walk (at most a handful of keys are looked at
# again, harmlessly), far too few to be a usable cookie (24 characters, about
# 124 bits, stay secret), so it may be printed and kept in shell history.
CHECKPOINT_LENGTH = 8


@dataclass
class MigrationReport:
    """What one run did; ``failures`` counts the sessions that could not be moved."""

    examined: int = 0
    copied: int = 0
    already_present: int = 0
    expired: int = 0
    undecodable: int = 0
    incompatible_keys: int = 0
    verified: int = 0
    mismatched: int = 0
    removed_from_source: int = 0
    batches: int = 0
    checkpoint: str = ""

    @property
    def failures(self) -> int:
        return self.undecodable + self.incompatible_keys + self.mismatched


def target_engine() -> type[ElasticSessionBase]:
    """The ``SessionStore`` of ``settings.SESSION_ENGINE``, which must be an elastic engine.

    Raises ``ImproperlyConfigured`` when it is not (for instance still Django's ``db``).
    """
    engine = settings.SESSION_ENGINE
    store = getattr(import_module(engine), "SessionStore", None)
    if not (isinstance(store, type) and issubclass(store, ElasticSessionBase)):
        raise ImproperlyConfigured(
            f"SESSION_ENGINE is {engine!r}; sessions can only be moved into an elastic "
            "engine. Run this command with the settings of the new release, where "
            "SESSION_ENGINE is 'elastic_sessions.backends.redis' or "
            "'elastic_sessions.backends.hybrid'."
        )
    return store


def source_decoder() -> Callable[[str], dict[str, Any]]:
    """Decode ``session_data`` as Django's ``db`` and ``cached_db`` engines sign it.

    Unlike ``SessionStore.decode``, which answers ``{}`` for anything it cannot
    read, this raises, so an unreadable row is counted instead of copied empty.
    """
    # Both engines sign with the salt of a class named SessionStore; the
    # serializer is the site's SESSION_SERIALIZER.
    source = DatabaseSessionStore()

    def decode(raw: str) -> dict[str, Any]:
        data = signing.loads(raw, salt=source.key_salt, serializer=source.serializer)
        if not isinstance(data, dict):
            raise ValueError("the session data is not a dict")
        return data

    return decode


@dataclass(frozen=True, slots=True)
class _SourceSession:
    key: str
    expires_at: int
    # Raises when the stored data cannot be decoded.
    read: Callable[[], dict[str, Any]]


def move_database_sessions(
    report: MigrationReport,
    *,
    database: str = "default",
    batch_size: int = 500,
    after: str = "",
    dry_run: bool = False,
    keep_source: bool = False,
    progress: Callable[[MigrationReport], None] = lambda _report: None,
) -> None:
    """Move every live row of Django's session table into ``settings.SESSION_ENGINE``.

    Rows are read in batches of ``batch_size`` ordered by key, starting after
    ``after`` (a checkpoint); ``report`` is updated as each batch completes, so it
    is accurate even when an outage (``SessionStoreUnavailable``,
    ``DatabaseError``) stops the run.  A row leaves the source only when the
    target holds the session (copied and read back equal, or already there) and
    the row was not changed meanwhile; ``keep_source`` leaves every row, and
    ``dry_run`` changes nothing at all.
    """
    mover = _Mover(report, dry_run)
    decode = source_decoder()
    rows = Session.objects.using(database).order_by("session_key")
    while True:
        batch = list(
            rows.filter(session_key__gt=after).values_list(
                "session_key", "session_data", "expire_date"
            )[:batch_size]
        )
        if not batch:
            return
        done = [
            (key, raw)
            for key, raw, expire_date in batch
            if mover.move(
                _SourceSession(key, math.floor(expire_date.timestamp()), partial(decode, raw))
            )
        ]
        if done and not (dry_run or keep_source):
            # Only rows still as read: a row an old server saved meanwhile stays.
            unchanged = reduce(or_, (Q(session_key=k, session_data=r) for k, r in done))
            removed, _ = Session.objects.using(database).filter(unchanged).delete()
            report.removed_from_source += removed
        after = batch[-1][0]
        report.batches += 1
        report.checkpoint = after[:CHECKPOINT_LENGTH]
        progress(report)


def move_cache_sessions(
    report: MigrationReport,
    *,
    cache_alias: str = "default",
    batch_size: int = 500,
    dry_run: bool = False,
    keep_source: bool = False,
    progress: Callable[[MigrationReport], None] = lambda _report: None,
) -> None:
    """Move the sessions of Django's ``cache`` engine on a django-redis ``cache_alias``.

    The keys are found with ``SCAN`` (``batch_size`` is its ``COUNT`` hint and the
    number handled between progress reports), so there is no order and no
    checkpoint: a moved session leaves the cache, and a second run picks up what
    is left.  Raises ``ImproperlyConfigured`` when the alias is not django-redis,
    and ``SessionStoreUnavailable`` when its Redis cannot be reached.
    """
    cache = caches[cache_alias]
    if not hasattr(cache, "iter_keys"):
        raise ImproperlyConfigured(
            f"CACHES[{cache_alias!r}] is not a django-redis cache; --source cache needs "
            "django-redis (it finds the sessions with SCAN). Pass --cache-alias with the "
            "alias of SESSION_CACHE_ALIAS."
        )
    # Imported here: django-redis is an optional dependency, present with such a cache.
    from django_redis.exceptions import ConnectionInterrupted  # noqa: PLC0415

    mover = _Mover(report, dry_run)
    prefix = CacheSessionStore.cache_key_prefix
    try:
        keys = cache.iter_keys(f"{prefix}*", itersize=batch_size)
        while batch := list(islice(keys, batch_size)):
            done = []
            for cache_key in batch:
                session = _cache_session(cache, cache_key, prefix)
                if session is not None and mover.move(session):
                    done.append(cache_key)
            if done and not (dry_run or keep_source):
                cache.delete_many(done)
                report.removed_from_source += len(done)
            report.batches += 1
            progress(report)
    except ConnectionInterrupted as err:
        raise SessionStoreUnavailable(
            f"The Redis of CACHES[{cache_alias!r}] could not be reached"
        ) from err


def _cache_session(cache: Any, cache_key: str, prefix: str) -> _SourceSession | None:
    ttl = cache.ttl(cache_key)
    if ttl == 0:
        return None  # expired or deleted since the SCAN saw it
    # Django's cache engine always sets a timeout; a key without one gets the
    # site's usual age rather than none.
    age = settings.SESSION_COOKIE_AGE if ttl is None else ttl

    def read() -> dict[str, Any]:
        data = cache.get(cache_key)
        if not isinstance(data, dict):
            raise ValueError("the cached value is not a session dict")
        return data

    return _SourceSession(cache_key.removeprefix(prefix), math.floor(time.time()) + age, read)


class _Mover:
    """Moves one session at a time into ``settings.SESSION_ENGINE``, counting in a report."""

    def __init__(self, report: MigrationReport, dry_run: bool) -> None:
        self.report = report
        self.dry_run = dry_run
        self.engine = target_engine()

    def move(self, source: _SourceSession) -> bool:
        """True when the target now holds the session (so the source may go)."""
        report, key = self.report, source.key
        report.examined += 1
        if source.expires_at <= time.time():
            report.expired += 1  # left for Django's clearsessions
            return False
        if not is_valid_session_key(key):
            # Django accepts keys of 8 characters or more; ours are exactly 32 of
            # [a-z0-9] (a custom key generator made this one): no cookie carries over.
            report.incompatible_keys += 1
            logger.warning("A session key of another shape than Django's default was not moved.")
            return False
        sid = storage_id(key)
        try:
            data = source.read()
        # Any serializer error means what a bad signature means: Django's own
        # engine would have served an empty session.  Counted and logged.
        except Exception as err:
            report.undecodable += 1
            logger.warning("Session %s could not be decoded and was not moved: %s", sid, err)
            return False
        if self.dry_run:
            if self.engine().exists(key):
                report.already_present += 1
            else:
                report.copied += 1
            return False
        # Fixed at the source's end: Django's engines move it only when a request
        # saves, so that is what the user had (see docs/operations.md).
        if not self.engine.import_session(key, data, int(source.expires_at)):
            # Created by an earlier run, or already in use on the new engine: either
            # way, the target's copy is newer than ours and must not be overwritten.
            report.already_present += 1
            return True
        report.copied += 1
        if not _reads_back_equal(self.engine, key, data):
            report.mismatched += 1
            logger.warning(
                "Session %s did not read back equal from the target after the copy.", sid
            )
            return False
        report.verified += 1
        return True


def _reads_back_equal(engine: type[ElasticSessionBase], key: str, data: dict[str, Any]) -> bool:
    store = engine(session_key=key)
    loaded = {name: store[name] for name in store.keys()}  # noqa: SIM118 (keys() loads)
    if store.session_key != key or loaded.keys() != data.keys():
        return False
    # Values of classes without __eq__ (under a pickle serializer) compare by
    # identity: equal serialized bytes are as good as equal values.
    dumps = store.serializer().dumps
    return all(
        loaded[name] == value or dumps(loaded[name]) == dumps(value) for name, value in data.items()
    )
