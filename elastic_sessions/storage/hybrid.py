"""Redis first, the database behind it: the hybrid engine's storage.

The database is the ground truth; Redis holds copies that are never newer than
it and never served once known to be older:

* a load reads Redis; a miss (or a fence) reads the database and puts the
  snapshot back into Redis unless something at least as new is there already;
* a save writes the database first (a versioned delta, refused for a session
  deleted meanwhile), then mirrors the same delta into Redis, which applies it
  only on top of the version just before; a copy out of step becomes a fence;
* a delete removes the row, then leaves a fence in Redis, so a load that read
  the database just before cannot put the session back;
* while Redis fails, a per-process circuit breaker sends requests straight to
  the database, and every write queues its session for invalidation; before the
  breaker trusts Redis again, the queued copies are deleted there.  Any process
  also drains the queue every few seconds, which bounds how long a process
  that never saw the outage can serve a copy another process could not update.

Every public method has an async twin; a database that cannot be reached raises
``SessionStoreUnavailable`` (the middleware's 503), except that a load served
from Redis does not need it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils.module_loading import import_string

from ..breaker import CircuitBreaker, breaker_for
from ..client import RequestClient
from ..codec import SessionMeta, codec_for
from ..conf import elastic_settings
from ..exceptions import CorruptSessionData, SessionStoreUnavailable
from ..keys import StorageId
from .database import DatabaseSessionStorage, DurableRecord, DurableWrite
from .redis import (
    DeleteResult,
    SessionSummary,
    StoredSession,
    WritePlan,
    WriteResult,
    _touch,
)
from .redis_copy import CopyHit, RedisCopy

logger = logging.getLogger(__name__)

BREAKER_NAME = "redis"
# Sessions reconciled per batch (one DEL each, in one round trip).
_RECONCILE_BATCH = 500
# How often a healthy process looks at the invalidation queue anyway.
RECONCILE_INTERVAL = 5.0


@contextmanager
def database_outages(action: str) -> Iterator[None]:
    """A database that cannot be reached is an outage (503), not a bug (500)."""
    try:
        yield
    except (OperationalError, InterfaceError) as err:
        raise SessionStoreUnavailable(
            f"The database could not {action}: {type(err).__name__}: {err}"
        ) from err


class HybridStorage:
    """The storage interface of the engines, over the database and Redis copies."""

    owner_fields: tuple[bytes, ...] = ()

    def __init__(self) -> None:
        self.db = DatabaseSessionStorage()
        self.copy = RedisCopy()
        self._next_reconcile = 0.0

    @property
    def breaker(self) -> CircuitBreaker:
        return breaker_for(BREAKER_NAME)

    # -- load ---------------------------------------------------------------
    def load(
        self, sid: StorageId, touch_interval_ms: int, client: RequestClient | None = None
    ) -> StoredSession | None:
        breaker = self.breaker
        use_redis = breaker.allow()
        # The probe's own read happened before Redis was reconciled: not served.
        probing = use_redis and not breaker.is_closed()
        if use_redis:
            if not probing:  # a probe reconciles anyway, before the breaker closes
                self._reconcile_now_and_then()
            try:
                hit = self.copy.load(sid, touch_interval_ms)
            except SessionStoreUnavailable as err:
                breaker.record_failure(err)
                use_redis = False
            except CorruptSessionData as err:
                # Redis answered: for the breaker that is a success.
                logger.warning("Ignored unreadable Redis copy of session %s (%s).", sid, err)
                use_redis = self._succeeded(breaker, probing)
            else:
                use_redis = self._succeeded(breaker, probing)
                if use_redis and hit is not None and not probing:
                    self._touch_durably(sid, hit, client)
                    return hit.stored
        with database_outages("load a session"):
            record = self.db.load(sid)
        if record is None:
            return None
        if use_redis:
            self._repopulate(sid, record, breaker)
        stored = _stored(record, None if use_redis else touch_interval_ms)
        if stored.touched_ttl_ms >= 0:
            # Served by the database (an outage): the expiry slides there, or an
            # active user with a short idle timeout would time out during it.
            self._touch_durably_or_log(sid, stored, client)
        return stored

    async def aload(
        self, sid: StorageId, touch_interval_ms: int, client: RequestClient | None = None
    ) -> StoredSession | None:
        breaker = self.breaker
        use_redis = breaker.allow()
        # The probe's own read happened before Redis was reconciled: not served.
        probing = use_redis and not breaker.is_closed()
        if use_redis:
            if not probing:  # a probe reconciles anyway, before the breaker closes
                await self._areconcile_now_and_then()
            try:
                hit = await self.copy.aload(sid, touch_interval_ms)
            except SessionStoreUnavailable as err:
                await breaker.arecord_failure(err)
                use_redis = False
            except CorruptSessionData as err:
                logger.warning("Ignored unreadable Redis copy of session %s (%s).", sid, err)
                use_redis = await self._asucceeded(breaker, probing)
            else:
                use_redis = await self._asucceeded(breaker, probing)
                if use_redis and hit is not None and not probing:
                    await self._atouch_durably(sid, hit, client)
                    return hit.stored
        with database_outages("load a session"):
            record = await self.db.aload(sid)
        if record is None:
            return None
        if use_redis:
            await self._arepopulate(sid, record, breaker)
        stored = _stored(record, None if use_redis else touch_interval_ms)
        if stored.touched_ttl_ms >= 0:
            await sync_to_async(self._touch_durably_or_log)(sid, stored, client)
        return stored

    # -- breaker bookkeeping and read-through ----------------------------------
    def _succeeded(self, breaker: CircuitBreaker, probing: bool) -> bool:
        """Report a Redis success; True if Redis may be used now.

        The probe that closes the breaker reconciles twice: before closing (so no
        request reads a stale copy) and right after, for database-only writes that
        committed while it was closing.  A write that commits later finds the
        breaker closed and does its own Redis step.
        """
        closed = breaker.record_success(self.reconcile)
        if closed and probing:
            self._reconcile_or_log()
        return closed

    async def _asucceeded(self, breaker: CircuitBreaker, probing: bool) -> bool:
        closed = await breaker.arecord_success(self.areconcile)
        if closed and probing:
            await self._areconcile_or_log()
        return closed

    def _repopulate(self, sid: StorageId, record: DurableRecord, breaker: CircuitBreaker) -> None:
        """Copy a database snapshot to Redis, then check it is still the latest.

        A fence stops older snapshots, but eviction can remove fences; a write
        that committed between the snapshot and the copy shows up as a newer
        version, and the copy goes (the next load reads the database again).
        Until the check confirms it, the copy is marked pending: no other load
        serves it in between.
        """
        try:
            mark = self.copy.repopulate(
                sid, record.fields, record.meta, record.version, record.expires_at
            )
            if mark:
                with database_outages("check a session's version"):
                    current = self.db.version_of(sid)
                if current == record.version:
                    self.copy.confirm(sid, mark)
                else:
                    self.copy.drop([sid])
        except SessionStoreUnavailable as err:
            breaker.record_failure(err)

    async def _arepopulate(
        self, sid: StorageId, record: DurableRecord, breaker: CircuitBreaker
    ) -> None:
        try:
            mark = await self.copy.arepopulate(
                sid, record.fields, record.meta, record.version, record.expires_at
            )
            if mark:
                with database_outages("check a session's version"):
                    current = await self.db.aversion_of(sid)
                if current == record.version:
                    await self.copy.aconfirm(sid, mark)
                else:
                    await self.copy.adrop([sid])
        except SessionStoreUnavailable as err:
            await breaker.arecord_failure(err)

    def _touch_durably_or_log(
        self, sid: StorageId, stored: StoredSession, client: RequestClient | None
    ) -> None:
        now = int(time.time())
        expires_at = now + stored.touched_ttl_ms // 1000
        try:
            with database_outages("touch a session"):
                self.db.touch(sid, expires_at, _stamp(client, now))
        except SessionStoreUnavailable as err:
            stored.touched_ttl_ms = -1  # not slid: no new cookie age either
            logger.warning("Could not record a touch of session %s durably: %s", sid, err)

    def _touch_durably(self, sid: StorageId, hit: CopyHit, client: RequestClient | None) -> None:
        expires_at = _durable_touch_due(hit)
        if expires_at is None:
            return
        try:
            with database_outages("touch a session"):
                self.db.touch(sid, expires_at, _stamp(client, int(time.time())))
            self.copy.note_durable_expiry(sid, expires_at)
        except SessionStoreUnavailable as err:
            # The request has its session; the next due touch tries again.
            logger.warning("Could not record a touch of session %s durably: %s", sid, err)

    async def _atouch_durably(
        self, sid: StorageId, hit: CopyHit, client: RequestClient | None
    ) -> None:
        expires_at = _durable_touch_due(hit)
        if expires_at is None:
            return
        try:
            with database_outages("touch a session"):
                await self.db.atouch(sid, expires_at, _stamp(client, int(time.time())))
            await self.copy.anote_durable_expiry(sid, expires_at)
        except SessionStoreUnavailable as err:
            logger.warning("Could not record a touch of session %s durably: %s", sid, err)

    # -- write --------------------------------------------------------------
    def write(self, sid: StorageId, plan: WritePlan) -> WriteResult:
        breaker = self.breaker
        use_redis = breaker.allow()
        probing = use_redis and not breaker.is_closed()
        if use_redis and not plan.create:
            try:
                self.copy.mark_pending(sid)
            except SessionStoreUnavailable as err:
                breaker.record_failure(err)
                use_redis = False
        with database_outages("save a session"):
            durable = self.db.write(sid, plan, invalidate_redis=not use_redis)
        if durable.status == 1 and (use_redis or breaker.is_closed()):
            try:
                self.copy.write(sid, plan, *_mirror_args(durable))
            except SessionStoreUnavailable as err:
                breaker.record_failure(err)
                self._queue_invalidation(sid)
            else:
                self._succeeded(breaker, probing)
        return WriteResult(durable.status, durable.meta)

    async def awrite(self, sid: StorageId, plan: WritePlan) -> WriteResult:
        breaker = self.breaker
        use_redis = breaker.allow()
        probing = use_redis and not breaker.is_closed()
        if use_redis and not plan.create:
            try:
                await self.copy.amark_pending(sid)
            except SessionStoreUnavailable as err:
                await breaker.arecord_failure(err)
                use_redis = False
        with database_outages("save a session"):
            durable = await self.db.awrite(sid, plan, invalidate_redis=not use_redis)
        if durable.status == 1 and (use_redis or breaker.is_closed()):
            try:
                await self.copy.awrite(sid, plan, *_mirror_args(durable))
            except SessionStoreUnavailable as err:
                await breaker.arecord_failure(err)
                await sync_to_async(self._queue_invalidation)(sid)
            else:
                await self._asucceeded(breaker, probing)
        return WriteResult(durable.status, durable.meta)

    def _queue_invalidation(self, sid: StorageId) -> None:
        # The durable write happened but its Redis copy may be stale now.
        with database_outages("queue a Redis invalidation"):
            self.db.queue_invalidation(sid)

    # -- delete -------------------------------------------------------------
    def delete(self, sid: StorageId, expected_owner: str | None = None) -> DeleteResult:
        breaker = self.breaker
        use_redis = breaker.allow()
        probing = use_redis and not breaker.is_closed()
        with database_outages("delete a session"):
            owner = self.db.delete(sid, invalidate_redis=not use_redis)
        if use_redis or breaker.is_closed():
            try:
                self.copy.fence_deleted(sid)
            except SessionStoreUnavailable as err:
                breaker.record_failure(err)
                self._queue_invalidation(sid)
            else:
                self._succeeded(breaker, probing)
        # The owner's index is the database's user_id column: nothing to fix.
        return DeleteResult(owner is not None, None, None, owner)

    async def adelete(self, sid: StorageId, expected_owner: str | None = None) -> DeleteResult:
        breaker = self.breaker
        use_redis = breaker.allow()
        probing = use_redis and not breaker.is_closed()
        with database_outages("delete a session"):
            owner = await self.db.adelete(sid, invalidate_redis=not use_redis)
        if use_redis or breaker.is_closed():
            try:
                await self.copy.afence_deleted(sid)
            except SessionStoreUnavailable as err:
                await breaker.arecord_failure(err)
                await sync_to_async(self._queue_invalidation)(sid)
            else:
                await self._asucceeded(breaker, probing)
        return DeleteResult(owner is not None, None, None, owner)

    # -- exists and the per-user index ----------------------------------------
    def exists(self, sid: StorageId) -> bool:
        with database_outages("check a session"):
            return self.db.exists(sid)

    async def aexists(self, sid: StorageId) -> bool:
        with database_outages("check a session"):
            return await self.db.aexists(sid)

    def update_index(
        self, user_id: str, add: StorageId | None, deadline: int, remove: Sequence[StorageId] = ()
    ) -> int:
        # Each row's user_id is the index, kept by every write.
        return 0

    async def aupdate_index(
        self, user_id: str, add: StorageId | None, deadline: int, remove: Sequence[StorageId] = ()
    ) -> int:
        return 0

    # -- per-user listing and revoking (elastic_sessions.api) ---------------
    def user_sessions(
        self, user_id: str, *, drop_broken_index: bool = False
    ) -> list[SessionSummary]:
        with database_outages("list a user's sessions"):
            return _summaries(self.db.user_sessions(user_id))

    async def auser_sessions(
        self, user_id: str, *, drop_broken_index: bool = False
    ) -> list[SessionSummary]:
        with database_outages("list a user's sessions"):
            return _summaries(await self.db.auser_sessions(user_id))

    def delete_if_owned(self, sid: StorageId, owner: tuple[bytes, bytes]) -> bool:
        return bool(self.delete_all_if_owned([sid], owner))

    async def adelete_if_owned(self, sid: StorageId, owner: tuple[bytes, bytes]) -> bool:
        return bool(await self.adelete_all_if_owned([sid], owner))

    def delete_all_if_owned(
        self, sids: Sequence[StorageId], owner: tuple[bytes, bytes]
    ) -> list[StorageId]:
        if not sids:
            return []
        breaker = self.breaker
        use_redis = breaker.allow()
        probing = use_redis and not breaker.is_closed()
        with database_outages("revoke sessions"):
            ended = self.db.delete_owned(sids, _user_of(owner), invalidate_redis=not use_redis)
        if ended and (use_redis or breaker.is_closed()):
            try:
                self.copy.fence_deleted_many(ended)
            except SessionStoreUnavailable as err:
                breaker.record_failure(err)
                for sid in ended:
                    self._queue_invalidation(sid)
            else:
                self._succeeded(breaker, probing)
        return ended

    async def adelete_all_if_owned(
        self, sids: Sequence[StorageId], owner: tuple[bytes, bytes]
    ) -> list[StorageId]:
        if not sids:
            return []
        breaker = self.breaker
        use_redis = breaker.allow()
        probing = use_redis and not breaker.is_closed()
        with database_outages("revoke sessions"):
            ended = await self.db.adelete_owned(
                sids, _user_of(owner), invalidate_redis=not use_redis
            )
        if ended and (use_redis or breaker.is_closed()):
            try:
                await self.copy.afence_deleted_many(ended)
            except SessionStoreUnavailable as err:
                await breaker.arecord_failure(err)
                for sid in ended:
                    await sync_to_async(self._queue_invalidation)(sid)
            else:
                await self._asucceeded(breaker, probing)
        return ended

    def forget_user_sessions(self, user_id: str, sids: Sequence[StorageId]) -> None:
        # Deleting the rows took them out of the user's listing already.
        return None

    async def aforget_user_sessions(self, user_id: str, sids: Sequence[StorageId]) -> None:
        return None

    # -- reconciliation -------------------------------------------------------
    def reconcile(self) -> int:
        """Delete the Redis copies of sessions written while Redis was unreachable.

        Runs before the breaker trusts Redis again (a failure here keeps it open)
        and every RECONCILE_INTERVAL seconds; returns how many copies went.
        """
        dropped = 0
        while True:
            with database_outages("read the Redis invalidation queue"):
                entries = self.db.queued_invalidations(_RECONCILE_BATCH)
            if not entries:
                return dropped
            self.copy.drop([sid for sid, _ in entries])
            with database_outages("update the Redis invalidation queue"):
                self.db.forget_invalidations(entries)
            dropped += len(entries)
            if len(entries) < _RECONCILE_BATCH:
                return dropped

    async def areconcile(self) -> int:
        return await sync_to_async(self.reconcile)()

    def _reconcile_now_and_then(self) -> None:
        now = time.monotonic()
        if now >= self._next_reconcile:
            self._next_reconcile = now + RECONCILE_INTERVAL
            self._reconcile_or_log()

    async def _areconcile_now_and_then(self) -> None:
        now = time.monotonic()
        if now >= self._next_reconcile:
            self._next_reconcile = now + RECONCILE_INTERVAL
            await self._areconcile_or_log()

    def _reconcile_or_log(self) -> None:
        try:
            self.reconcile()
        except SessionStoreUnavailable as err:
            logger.warning("Could not reconcile Redis with the database: %s", err)

    async def _areconcile_or_log(self) -> None:
        try:
            await self.areconcile()
        except SessionStoreUnavailable as err:
            logger.warning("Could not reconcile Redis with the database: %s", err)


def _summaries(
    rows: list[tuple[StorageId, SessionMeta, int, bytes | None]],
) -> list[SessionSummary]:
    now_ms = int(time.time() * 1000)
    return [
        SessionSummary(sid, meta, expires_at * 1000 - now_ms, client)
        for sid, meta, expires_at, client in rows
    ]


def _user_of(owner: tuple[bytes, bytes]) -> str:
    """The user id an owner field (as the API builds it for Redis) stands for."""
    field, value = owner
    serializer = import_string(settings.SESSION_SERIALIZER)
    return str(codec_for(serializer).decode_item(field, value)[1])


def _stored(record: DurableRecord, touch_interval_ms: int | None) -> StoredSession:
    """The session as loaded from the database; with ``touch_interval_ms`` (served
    without Redis), ``touched_ttl_ms`` says whether and how far it should slide."""
    ttl_ms = max(0, record.expires_at * 1000 - int(time.time() * 1000))
    stored = StoredSession(dict(record.fields), record.meta, ttl_ms)
    if touch_interval_ms is not None:
        _touch(stored, touch_interval_ms)
    return stored


def _mirror_args(durable: DurableWrite) -> tuple[int, int, SessionMeta]:
    assert durable.meta is not None  # a write that succeeded reports its metadata
    return durable.version, durable.expires_at, durable.meta


def _stamp(client: RequestClient | None, now: int) -> bytes | None:
    return client.stamp(now) if client is not None else None


def _durable_touch_due(hit: CopyHit) -> int | None:
    """The expiry to record durably after this load's touch, if it drifted enough."""
    touched_ms = hit.stored.touched_ttl_ms
    if touched_ms < 0:
        return None
    expires_at = int(time.time()) + touched_ms // 1000
    # A pure touch reaches the database only past this drift, which is never
    # more than a quarter of the idle timeout (a short idle needs a close copy).
    drift = min(elastic_settings.DATABASE_TOUCH_DRIFT, hit.stored.meta.idle // 4)
    return expires_at if expires_at - hit.durable_expiry > drift else None
