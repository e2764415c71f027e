"""The durable copy of sessions in the database (the hybrid engine's ground truth).

Rows mirror the Redis hash (see :mod:`elastic_sessions.models`), and a write
applies the same delta as in Redis: changed fields are upserted, removed ones
deleted, inside one transaction that starts by updating the session's own row.
That first statement is what makes writes safe without a read-modify-write:

* it takes the row's write lock (PostgreSQL) or the database's (SQLite) before
  anything is read, so concurrent saves of one session queue up instead of
  overwriting each other's fields, and SQLite never has to upgrade a read lock;
* it matches no row when the session was deleted or has expired meanwhile, so a
  save never resurrects a session (``status`` -1, Django's ``UpdateError``);
* it bumps the session's ``version``, which the Redis copy carries: a Redis copy
  that missed a write is recognised by its older version.

Times are epoch seconds from this host's clock, as in the Redis metadata.  The
async methods run the transactional work in Django's thread for database access
(``sync_to_async``): Django's async ORM cannot open a transaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.db import IntegrityError, connection, transaction
from django.db.models import F, QuerySet, Value
from django.db.models.functions import Least

from ..codec import SessionMeta, key_bytes_of_field
from ..keys import StorageId
from ..models import DurableSession, DurableSessionField, RedisInvalidation
from .redis import WritePlan

# The metadata's unsigned 32-bit seconds (see storage.scripts.SAVE).
_MAX_SECONDS = 2**32 - 1


@dataclass(frozen=True, slots=True)
class DurableRecord:
    """A session as the database holds it."""

    fields: dict[bytes, bytes]
    meta: SessionMeta
    expires_at: int
    version: int
    user_id: str | None


@dataclass(frozen=True, slots=True)
class DurableWrite:
    """``status`` as for Redis: 1 written, 0 exists (create), -1 missing, -2 expired."""

    status: int
    meta: SessionMeta | None = None
    expires_at: int = 0
    version: int = 0


def expiry_of(plan: WritePlan, deadline: int, now: int) -> int:
    """When a session written under ``plan`` ends: the idle timeout from now (or
    the fixed expiry), never past the absolute deadline."""
    expires = min(deadline, _MAX_SECONDS)
    if plan.fixed_expiry and plan.fixed_expiry < expires:
        expires = plan.fixed_expiry
    if plan.idle > 0:
        expires = min(expires, now + min(plan.idle, _MAX_SECONDS))
    return expires


class DatabaseSessionStorage:
    """Sessions in the database; one instance per engine class."""

    # -- load ---------------------------------------------------------------
    def load(self, sid: StorageId) -> DurableRecord | None:
        """The live session under ``sid``, or None (missing or expired)."""
        if connection.vendor in _LEAST:
            return _load_joined(sid)
        row = (
            DurableSession.objects.filter(pk=sid, expires_at__gt=int(time.time()))
            .values_list("created", "deadline", "idle", "expires_at", "version", "user_id")
            .first()
        )
        if row is None:
            return None
        fields = DurableSessionField.objects.filter(session_id=sid).values_list("name", "value")
        return _record(row, list(fields))

    async def aload(self, sid: StorageId) -> DurableRecord | None:
        if connection.vendor in _LEAST:
            return await sync_to_async(_load_joined)(sid)
        row = await (
            DurableSession.objects.filter(pk=sid, expires_at__gt=int(time.time()))
            .values_list("created", "deadline", "idle", "expires_at", "version", "user_id")
            .afirst()
        )
        if row is None:
            return None
        fields = [
            item
            async for item in DurableSessionField.objects.filter(session_id=sid).values_list(
                "name", "value"
            )
        ]
        return _record(row, fields)

    def exists(self, sid: StorageId) -> bool:
        return DurableSession.objects.filter(pk=sid, expires_at__gt=int(time.time())).exists()

    async def aexists(self, sid: StorageId) -> bool:
        return await DurableSession.objects.filter(
            pk=sid, expires_at__gt=int(time.time())
        ).aexists()

    # -- write --------------------------------------------------------------
    def write(self, sid: StorageId, plan: WritePlan, *, invalidate_redis: bool) -> DurableWrite:
        """Apply ``plan`` durably (its index change sets the row's user);
        ``invalidate_redis`` queues the Redis copy for deletion (Redis unreachable)."""
        now = int(time.time())
        with transaction.atomic():
            result = _create(sid, plan, now) if plan.create else _update(sid, plan, now)
            if result.status == 1:
                _apply_fields(sid, plan)
                if invalidate_redis:
                    _queue_invalidation(sid)
        return result

    async def awrite(
        self, sid: StorageId, plan: WritePlan, *, invalidate_redis: bool
    ) -> DurableWrite:
        return await sync_to_async(self.write)(sid, plan, invalidate_redis=invalidate_redis)

    def queue_invalidation(self, sid: StorageId) -> None:
        """Queue the session's Redis copy for deletion (a Redis write failed)."""
        _queue_invalidation(sid)

    def version_of(self, sid: StorageId) -> int | None:
        """The session's current version (None: no such session)."""
        return DurableSession.objects.filter(pk=sid).values_list("version", flat=True).first()

    async def aversion_of(self, sid: StorageId) -> int | None:
        return (
            await DurableSession.objects.filter(pk=sid).values_list("version", flat=True).afirst()
        )

    def touch(self, sid: StorageId, expires_at: int, client: bytes | None = None) -> bool:
        """Move a session's expiry forward (never back, never past its deadline),
        recording it as seen now, by ``client`` if given (a client field)."""
        return bool(
            DurableSession.objects.filter(pk=sid, expires_at__lt=expires_at).update(
                **_touch_changes(expires_at, client)
            )
        )

    async def atouch(self, sid: StorageId, expires_at: int, client: bytes | None = None) -> bool:
        return bool(
            await DurableSession.objects.filter(pk=sid, expires_at__lt=expires_at).aupdate(
                **_touch_changes(expires_at, client)
            )
        )

    # -- delete -------------------------------------------------------------
    def delete(self, sid: StorageId, *, invalidate_redis: bool) -> str | None:
        """Delete the session; returns who owned it (None: nobody, or no session)."""
        with transaction.atomic():
            _lock_rows(DurableSession.objects.filter(pk=sid))
            owner = DurableSession.objects.filter(pk=sid).values_list("user_id", flat=True).first()
            DurableSession.objects.filter(pk=sid).delete()
            if invalidate_redis:
                _queue_invalidation(sid)
        return owner

    async def adelete(self, sid: StorageId, *, invalidate_redis: bool) -> str | None:
        return await sync_to_async(self.delete)(sid, invalidate_redis=invalidate_redis)

    def delete_owned(
        self, sids: Sequence[StorageId], user_id: str, *, invalidate_redis: bool
    ) -> list[StorageId]:
        """Delete those of ``sids`` that belong to ``user_id``; returns them."""
        with transaction.atomic():
            mine = DurableSession.objects.filter(pk__in=sids, user_id=user_id)
            _lock_rows(mine)
            owned = [StorageId(sid) for sid in mine.values_list("pk", flat=True)]
            DurableSession.objects.filter(pk__in=owned, user_id=user_id).delete()
            if invalidate_redis:
                for sid in owned:
                    _queue_invalidation(sid)
        return owned

    async def adelete_owned(
        self, sids: Sequence[StorageId], user_id: str, *, invalidate_redis: bool
    ) -> list[StorageId]:
        return await sync_to_async(self.delete_owned)(
            sids, user_id, invalidate_redis=invalidate_redis
        )

    def user_sessions(self, user_id: str) -> list[tuple[StorageId, SessionMeta, int, bytes | None]]:
        """``(storage id, metadata, expires_at, client field)`` of the user's live sessions."""
        rows = DurableSession.objects.filter(
            user_id=user_id, expires_at__gt=int(time.time())
        ).values_list("pk", "created", "deadline", "idle", "expires_at", "client")
        return [
            (
                StorageId(pk),
                SessionMeta(created, deadline, idle),
                expires_at,
                bytes(client) if client is not None else None,
            )
            for pk, created, deadline, idle, expires_at, client in rows
        ]

    async def auser_sessions(
        self, user_id: str
    ) -> list[tuple[StorageId, SessionMeta, int, bytes | None]]:
        return await sync_to_async(self.user_sessions)(user_id)

    # -- Redis reconciliation -----------------------------------------------
    def queued_invalidations(self, limit: int) -> list[tuple[StorageId, int]]:
        """``(storage id, queued_at)`` of sessions whose Redis copy must go before
        Redis is trusted again, oldest first."""
        rows = RedisInvalidation.objects.order_by("queued_at").values_list(
            "storage_id", "queued_at"
        )
        return [(StorageId(sid), queued_at) for sid, queued_at in rows[:limit]]

    def forget_invalidations(self, entries: Sequence[tuple[StorageId, int]]) -> None:
        """Drop the queue entries handled, exactly as read: an entry queued again
        since (a newer ``queued_at``) stays for the next pass."""
        for sid, queued_at in entries:
            RedisInvalidation.objects.filter(pk=sid, queued_at=queued_at).delete()

    def purge_expired(self, now: int, batch_size: int) -> int:
        """Delete up to ``batch_size`` ended sessions; returns how many were found."""
        ids = list(
            DurableSession.objects.filter(expires_at__lte=now).values_list("pk", flat=True)[
                :batch_size
            ]
        )
        if ids:
            delete_ended(ids, now)
        return len(ids)


# BinaryField values come back as bytes or memoryview, by database.
_Stored = bytes | memoryview


def delete_ended(ids: Sequence[str], now: int) -> int:
    """Delete one batch of ended sessions and their fields in one short transaction.

    Plain DELETE statements: the ORM's delete() would load every row as a model
    instance to run its cascade in Python, which costs more than the deletes.
    """
    session = connection.ops.quote_name(DurableSession._meta.db_table)
    fields = connection.ops.quote_name(DurableSessionField._meta.db_table)
    marks = ", ".join(["%s"] * len(ids))
    with transaction.atomic(), connection.cursor() as cursor:
        # The session rows first: that write takes the locks at once (see
        # _lock_rows); the foreign key is checked at commit.
        cursor.execute(
            f"DELETE FROM {session} WHERE storage_id IN ({marks}) AND expires_at <= %s",
            [*ids, now],
        )
        deleted: int = cursor.rowcount
        # Only the fields of rows that went: a session touched since the batch
        # was chosen (its expiry moved) kept its row, and keeps its fields.
        cursor.execute(
            f"DELETE FROM {fields} WHERE storage_id IN ({marks}) AND NOT EXISTS "
            f"(SELECT 1 FROM {session} s WHERE s.storage_id = {fields}.storage_id)",
            ids,
        )
    return deleted


def _lock_rows(rows: QuerySet[DurableSession]) -> None:
    # A write as the transaction's first statement: it takes the write lock at
    # once (SQLite waits for it with its busy timeout; a read first would have
    # to upgrade its lock later, which SQLite refuses at once under a concurrent
    # writer: "database is locked").  The ORM's delete() reads before it writes.
    rows.update(version=F("version"))


def _touch_changes(expires_at: int, client: bytes | None) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "expires_at": Least(F("deadline"), Value(expires_at)),
        "last_seen": int(time.time()),
    }
    if client is not None:
        changes["client"] = client
    return changes


def _record(
    row: tuple[int, int, int, int, int, str | None], fields: list[tuple[_Stored, _Stored]]
) -> DurableRecord:
    created, deadline, idle, expires_at, version, user_id = row
    return DurableRecord(
        fields={bytes(name): bytes(value) for name, value in fields},
        meta=SessionMeta(created, deadline, idle),
        expires_at=expires_at,
        version=version,
        user_id=user_id,
    )


def _create(sid: StorageId, plan: WritePlan, now: int) -> DurableWrite:
    inherited = plan.inherited_meta
    created = inherited.created if inherited else now
    deadline = inherited.deadline if inherited else now + plan.absolute
    if plan.deadline_cap:
        deadline = min(deadline, plan.deadline_cap)
    expires_at = expiry_of(plan, deadline, now)
    if expires_at <= now:
        return DurableWrite(-2)
    idle = min(plan.idle, _MAX_SECONDS)
    try:
        # A savepoint: a collision must not abort the surrounding transaction.
        with transaction.atomic():
            DurableSession.objects.create(
                storage_id=sid,
                user_id=plan.index.add_user if plan.index else None,
                created=created,
                deadline=min(deadline, _MAX_SECONDS),
                idle=idle,
                expires_at=expires_at,
                version=1,
                last_seen=now,
                client=plan.client,
            )
    except IntegrityError:
        return DurableWrite(0)
    meta = SessionMeta(created, min(deadline, _MAX_SECONDS), idle)
    return DurableWrite(1, meta, expires_at, 1)


def _update(sid: StorageId, plan: WritePlan, now: int) -> DurableWrite:
    idle = min(plan.idle, _MAX_SECONDS)
    # The new expiry comes from the row's own deadline, in the same statement
    # that locks the row: nothing is read before the lock is held.
    row = _update_returning(sid, plan, idle, now)
    if row is _NO_RETURNING:
        row = _update_then_read(sid, plan, idle, now)
    if row is None:
        return DurableWrite(-1)
    created, deadline, expires_at, version = row
    if expires_at <= now:
        # The fixed expiry has passed: the write ends the session instead.
        DurableSession.objects.filter(pk=sid).delete()
        return DurableWrite(-2)
    return DurableWrite(1, SessionMeta(created, deadline, idle), expires_at, version)


def _update_then_read(
    sid: StorageId, plan: WritePlan, idle: int, now: int
) -> tuple[int, int, int, int] | None:
    """The ORM's way, for databases whose UPDATE cannot return the row."""
    deadline: Any = F("deadline")
    if plan.deadline_cap:
        deadline = Least(deadline, Value(plan.deadline_cap))
    expires = Least(deadline, Value(now + idle if idle > 0 else _MAX_SECONDS))
    if plan.fixed_expiry:
        expires = Least(expires, Value(plan.fixed_expiry))
    changes: dict[str, object] = {
        "version": F("version") + 1,
        "idle": idle,
        "deadline": deadline,
        "expires_at": expires,
        "last_seen": now,
    }
    if plan.client is not None:
        changes["client"] = plan.client
    if plan.index is not None:  # a login, a logout or a user switch
        changes["user_id"] = plan.index.add_user
    if not DurableSession.objects.filter(pk=sid, expires_at__gt=now).update(**changes):
        return None
    return DurableSession.objects.values_list("created", "deadline", "expires_at", "version").get(
        pk=sid
    )


_NO_RETURNING: Any = object()
# Vendors whose UPDATE can return the row it changed, and their two-argument minimum.
_LEAST = {"sqlite": "MIN", "postgresql": "LEAST"}


def _update_returning(
    sid: StorageId, plan: WritePlan, idle: int, now: int
) -> tuple[int, int, int, int] | Any | None:
    """The update and the read of the new row in one statement (one query less per
    save than the ORM's update() then get()); _NO_RETURNING where unsupported."""
    least = _LEAST.get(connection.vendor)
    if least is None:
        return _NO_RETURNING
    table = connection.ops.quote_name(DurableSession._meta.db_table)
    # SET expressions read the row as it was: the new expiry applies the cap too.
    deadline, cap = "deadline", [plan.deadline_cap] if plan.deadline_cap else []
    if cap:
        deadline = f"{least}(deadline, %s)"
    expires = f"{least}({deadline}, %s)"
    params: list[int | str | bytes | None] = [now, idle, *cap]
    params.append(now + idle if idle > 0 else _MAX_SECONDS)
    if plan.fixed_expiry:
        expires = f"{least}({expires}, %s)"
        params.append(plan.fixed_expiry)
    user = f", deadline = {deadline}" if cap else ""
    params += cap
    if plan.index is not None:  # a login, a logout or a user switch
        user += ", user_id = %s"
        params.append(plan.index.add_user)
    if plan.client is not None:
        user += ", client = %s"
        params.append(plan.client)
    params += [sid, now]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET version = version + 1, last_seen = %s, idle = %s, "
            f"expires_at = {expires}{user} "
            "WHERE storage_id = %s AND expires_at > %s "
            "RETURNING created, deadline, expires_at, version",
            params,
        )
        row = cursor.fetchone()
    return None if row is None else tuple(row)


def _apply_fields(sid: StorageId, plan: WritePlan) -> None:
    # Rows are per session key: a key set in another form is updated in place,
    # so only keys that are gone are deleted (the plan's deletes also name the
    # other forms of the keys it sets, which Redis needs and rows do not).
    kept = {key_bytes_of_field(name) for name in plan.sets}
    gone = {key_bytes_of_field(name) for name in plan.deletes} - kept
    if gone:
        DurableSessionField.objects.filter(session_id=sid, key__in=gone).delete()
    if plan.sets:
        _upsert_fields(sid, plan.sets)


def _upsert_fields(sid: StorageId, sets: dict[bytes, bytes]) -> None:
    rows = [(sid, key_bytes_of_field(name), name, value) for name, value in sets.items()]
    if connection.vendor in _LEAST:
        # One statement, without the ORM building model instances for it.
        table = connection.ops.quote_name(DurableSessionField._meta.db_table)
        values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (storage_id, key, name, value) VALUES {values} "
                "ON CONFLICT (storage_id, key) "
                "DO UPDATE SET name = excluded.name, value = excluded.value",
                [item for row in rows for item in row],
            )
        return
    DurableSessionField.objects.bulk_create(
        [
            DurableSessionField(session_id=sid, key=key, name=name, value=value)
            for sid, key, name, value in rows
        ],
        update_conflicts=True,
        unique_fields=["session", "key"],
        update_fields=["name", "value"],
    )


def _load_joined(sid: StorageId) -> DurableRecord | None:
    """The session row and its fields in one query (SQLite, PostgreSQL)."""
    session = connection.ops.quote_name(DurableSession._meta.db_table)
    field = connection.ops.quote_name(DurableSessionField._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.created, s.deadline, s.idle, s.expires_at, s.version, s.user_id, "
            f"f.name, f.value FROM {session} s LEFT JOIN {field} f "
            "ON f.storage_id = s.storage_id WHERE s.storage_id = %s AND s.expires_at > %s",
            [sid, int(time.time())],
        )
        rows = cursor.fetchall()
    if not rows:
        return None
    fields = [(name, value) for *_, name, value in rows if name is not None]
    return _record(tuple(rows[0][:6]), fields)


def _queue_invalidation(sid: StorageId) -> None:
    # Nanoseconds: a re-queue always changes queued_at, so a reconcile that read
    # the older entry never forgets the newer one.
    RedisInvalidation.objects.bulk_create(
        [RedisInvalidation(storage_id=sid, queued_at=time.time_ns())],
        update_conflicts=True,
        unique_fields=["storage_id"],
        update_fields=["queued_at"],
    )
