"""The hybrid engine's Redis copy of durable sessions.

The layout is the Redis engine's hash (see :mod:`elastic_sessions.storage.redis`)
plus two fields: ``\\x04``, the database version the copy mirrors, and ``\\x05``,
the expiry the database holds (epoch ms), so a load can tell when a touch has
drifted far enough from it to be worth a database write.  A hash holding only
``\\x04`` is a fence (see ``HYBRID_SAVE`` in :mod:`.scripts`): a load treats it
as a miss and reads the database.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..codec import META_FIELD, SessionMeta
from ..connection import get_async_client, get_client, translate_outages
from ..keys import StorageId, session_redis_key
from .redis import StoredSession, WritePlan, _parse_load, _touch, _touch_command, hash_fields
from .scripts import (
    CONFIRM_COPY,
    MARK_PENDING,
    ScriptCall,
    arun_pipeline,
    fence_deleted_script,
    hybrid_save_script,
    repopulate_script,
    run_pipeline,
)
from .wire import aexecute, asend_later, execute, send_later

VERSION_FIELD = b"\x04"
DURABLE_EXPIRY_FIELD = b"\x05"
# Set while a save is between its database commit and its Redis write.
PENDING_FIELD = b"\x06"
# A pending mark this old belongs to a save that will never finish.  Far longer
# than a save takes; until then, loads of that session read the database.
PENDING_ABANDONED_MS = 10_000

# How long a fence stops older snapshots: far longer than a database read and
# a Redis write take, far shorter than any session.
FENCE_MS = 60_000


@dataclass(slots=True)
class CopyHit:
    """A Redis copy as loaded."""

    stored: StoredSession
    version: int
    # The database's expiry for this session, epoch seconds (0: unknown).
    durable_expiry: int


class RedisCopy:
    """Reads and writes the Redis copies; every method may raise
    ``SessionStoreUnavailable`` (the hybrid engine then turns to the database)."""

    def load(self, sid: StorageId, touch_interval_ms: int) -> CopyHit | None:
        key = session_redis_key(sid)
        with translate_outages("load a session"):
            client = get_client()
            hit = _parse_copy(execute(client, [("HGETALL", key), ("PTTL", key)]))
            if hit is not None and _touch(hit.stored, touch_interval_ms):
                send_later(client, [_touch_command(key, touch_interval_ms)])
        return hit

    async def aload(self, sid: StorageId, touch_interval_ms: int) -> CopyHit | None:
        key = session_redis_key(sid)
        with translate_outages("load a session"):
            client = get_async_client()
            hit = _parse_copy(await aexecute(client, [("HGETALL", key), ("PTTL", key)]))
            if hit is not None and _touch(hit.stored, touch_interval_ms):
                await asend_later(client, [_touch_command(key, touch_interval_ms)])
        return hit

    def write(
        self, sid: StorageId, plan: WritePlan, version: int, expires_at: int, meta: SessionMeta
    ) -> int:
        """Mirror a durable write; 1 applied, 0 newer there, -1 fenced (copy dropped)."""
        with translate_outages("save a session"):
            reply = run_pipeline(get_client(), [_save_call(sid, plan, version, expires_at, meta)])
        return int(reply[0])

    async def awrite(
        self, sid: StorageId, plan: WritePlan, version: int, expires_at: int, meta: SessionMeta
    ) -> int:
        with translate_outages("save a session"):
            reply = await arun_pipeline(
                get_async_client(), [_save_call(sid, plan, version, expires_at, meta)]
            )
        return int(reply[0])

    def repopulate(
        self, sid: StorageId, fields: dict[bytes, bytes], meta: SessionMeta, version: int,
        expires_at: int,
    ) -> int:  # fmt: skip
        """Copy a snapshot, marked pending; returns the mark (0: refused)."""
        with translate_outages("copy a session to Redis"):
            reply = run_pipeline(
                get_client(), [_repopulate_call(sid, fields, meta, version, expires_at)]
            )
        return int(reply[0])

    async def arepopulate(
        self, sid: StorageId, fields: dict[bytes, bytes], meta: SessionMeta, version: int,
        expires_at: int,
    ) -> int:  # fmt: skip
        with translate_outages("copy a session to Redis"):
            reply = await arun_pipeline(
                get_async_client(), [_repopulate_call(sid, fields, meta, version, expires_at)]
            )
        return int(reply[0])

    def confirm(self, sid: StorageId, mark: int) -> None:
        """Let loads use a repopulated copy (no round trip of its own)."""
        with translate_outages("copy a session to Redis"):
            send_later(get_client(), [_confirm_command(sid, mark)])

    async def aconfirm(self, sid: StorageId, mark: int) -> None:
        with translate_outages("copy a session to Redis"):
            await asend_later(get_async_client(), [_confirm_command(sid, mark)])

    def fence_deleted(self, sid: StorageId) -> None:
        with translate_outages("delete a session"):
            run_pipeline(get_client(), [_fence_call(sid)])

    async def afence_deleted(self, sid: StorageId) -> None:
        with translate_outages("delete a session"):
            await arun_pipeline(get_async_client(), [_fence_call(sid)])

    def fence_deleted_many(self, sids: Sequence[StorageId]) -> None:
        with translate_outages("revoke sessions"):
            run_pipeline(get_client(), [_fence_call(sid) for sid in sids])

    async def afence_deleted_many(self, sids: Sequence[StorageId]) -> None:
        with translate_outages("revoke sessions"):
            await arun_pipeline(get_async_client(), [_fence_call(sid) for sid in sids])

    def mark_pending(self, sid: StorageId) -> None:
        """Sent before a save's database transaction (no round trip of its own)."""
        with translate_outages("save a session"):
            send_later(get_client(), [_mark_command(sid)])

    async def amark_pending(self, sid: StorageId) -> None:
        with translate_outages("save a session"):
            await asend_later(get_async_client(), [_mark_command(sid)])

    def drop(self, sids: Sequence[StorageId]) -> None:
        """Delete copies that may be stale (one ``DEL`` per key: keys of any slot)."""
        if sids:
            with translate_outages("reconcile Redis"):
                execute(get_client(), [("DEL", session_redis_key(sid)) for sid in sids])

    async def adrop(self, sids: Sequence[StorageId]) -> None:
        if sids:
            with translate_outages("reconcile Redis"):
                await aexecute(
                    get_async_client(), [("DEL", session_redis_key(sid)) for sid in sids]
                )

    def note_durable_expiry(self, sid: StorageId, expires_at: int) -> None:
        """Record the database's new expiry in the copy (after a database touch)."""
        key = session_redis_key(sid)
        with translate_outages("touch a session"):
            # Only on a live copy: a fence or a missing key stays as it is.
            send_later(get_client(), [_note_expiry_command(key, expires_at)])

    async def anote_durable_expiry(self, sid: StorageId, expires_at: int) -> None:
        key = session_redis_key(sid)
        with translate_outages("touch a session"):
            await asend_later(get_async_client(), [_note_expiry_command(key, expires_at)])


def _parse_copy(replies: list[Any]) -> CopyHit | None:
    flat, ttl_ms = replies
    if not isinstance(flat, Exception):
        flat = hash_fields(flat)
        if META_FIELD not in flat or PENDING_FIELD in flat:
            return None  # nothing, a fence, or a save in flight: read the database
    stored = _parse_load([flat, ttl_ms])
    if stored is None:
        return None
    raw_version = stored.fields.pop(VERSION_FIELD, b"0")
    raw_expiry = stored.fields.pop(DURABLE_EXPIRY_FIELD, b"0")
    try:
        version, durable_expiry = int(raw_version), int(raw_expiry) // 1000
    except ValueError:
        version, durable_expiry = 0, 0  # unreadable: treated as out of step
    return CopyHit(stored, version, durable_expiry)


def _save_call(
    sid: StorageId, plan: WritePlan, version: int, expires_at: int, meta: SessionMeta
) -> ScriptCall:
    args: list[Any] = [
        "c" if plan.create else "u",
        version,
        expires_at * 1000,
        meta.encode(),
        FENCE_MS,
        len(plan.sets) + 1,
    ]
    for name, value in plan.sets.items():
        args += (name, value)
    args += (DURABLE_EXPIRY_FIELD, expires_at * 1000)
    args += plan.deletes
    return (hybrid_save_script, [session_redis_key(sid)], args)


def _repopulate_call(
    sid: StorageId, fields: dict[bytes, bytes], meta: SessionMeta, version: int, expires_at: int
) -> ScriptCall:
    args: list[Any] = [version, expires_at * 1000, meta.encode(), PENDING_ABANDONED_MS]
    for name, value in fields.items():
        args += (name, value)
    args += (DURABLE_EXPIRY_FIELD, expires_at * 1000)
    return (repopulate_script, [session_redis_key(sid)], args)


def _confirm_command(sid: StorageId, mark: int) -> tuple[Any, ...]:
    return ("EVAL", CONFIRM_COPY, 1, session_redis_key(sid), mark)


def _mark_command(sid: StorageId) -> tuple[Any, ...]:
    # EVAL: its reply is read later, where a NOSCRIPT could not be handled.
    return ("EVAL", MARK_PENDING, 1, session_redis_key(sid), int(time.time() * 1000))


def _fence_call(sid: StorageId) -> ScriptCall:
    return (fence_deleted_script, [session_redis_key(sid)], [FENCE_MS])


# HSETEX-like "only if it is a live copy": a tiny script, sent without waiting.
_NOTE_EXPIRY = (
    "if redis.call('HEXISTS', KEYS[1], '\\0') == 1 then "
    "redis.call('HSET', KEYS[1], '\\5', ARGV[1]) end return 1"
)


def _note_expiry_command(key: str, expires_at: int) -> tuple[Any, ...]:
    return ("EVAL", _NOTE_EXPIRY, 1, key, expires_at * 1000)
