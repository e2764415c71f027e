"""Sessions in Redis: one hash per session, one sorted set per user.

Every operation is one round trip, and every Redis call here names keys of one
slot, so the layout runs unchanged on Redis Cluster.  Methods come in sync and
async twins that differ only by ``await``; argument building and reply parsing
are pure functions below the class.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import ResponseError

from ..client import CLIENT_FIELD, RequestClient, decode_client
from ..codec import META_FIELD, SessionMeta
from ..connection import get_async_client, get_client, translate_outages
from ..exceptions import CorruptSessionData
from ..keys import StorageId, session_redis_key, user_index_redis_key
from .listing_index import forget_commands, seen_commands
from .scripts import (
    TOUCH,
    Call,
    ScriptCall,
    arun_calls,
    arun_pipeline,
    delete_if_owned_script,
    delete_script,
    index_update_script,
    run_calls,
    run_pipeline,
    save_script,
)
from .wire import Command, aexecute, asend_later, execute, first_error, send_later

logger = logging.getLogger(__name__)

# Index scores are deadlines; when a write cannot know the server-side deadline
# yet, it estimates one and adds this much for clock skew between hosts.
_DEADLINE_SKEW_MARGIN = 60


@dataclass(slots=True)
class StoredSession:
    """A session as read: its data fields (metadata taken out) and metadata.

    ``touched_ttl_ms`` is the TTL the touch sent with this load sets, or -1.
    ``client`` is the stored client field (see client.py), if any.
    """

    fields: dict[bytes, bytes]
    meta: SessionMeta
    ttl_ms: int
    touched_ttl_ms: int = -1
    client: bytes | None = None


@dataclass(frozen=True, slots=True)
class IndexChange:
    """Move a session between users' indexes (login, logout, user switch)."""

    add_user: str | None
    remove_user: str | None
    deadline: int


@dataclass(frozen=True, slots=True)
class WritePlan:
    """Everything one save sends: which fields change and the expiry policy."""

    create: bool
    idle: int
    absolute: int
    fixed_expiry: int
    sets: dict[bytes, bytes]
    deletes: list[bytes]
    index: IndexChange | None = None
    # On create: the metadata of the session this one replaces (cycle_key), so
    # the creation time and the absolute deadline carry over.
    inherited_meta: SessionMeta | None = None
    # The client field to store (client.py), when the request's client is known.
    client: bytes | None = None
    # When the session will expire after this write, as far as the engine can
    # tell before the reply (for the admin listing's order; 0: unknown).
    expires_hint: int = 0
    # The latest the absolute deadline may be, epoch seconds (0: none): it only
    # ever lowers the deadline (a staff session's stricter absolute timeout).
    deadline_cap: int = 0


@dataclass(frozen=True, slots=True)
class WriteResult:
    """``status``: 1 written, 0 key exists (create), -1 missing (update), -2 expired."""

    status: int
    meta: SessionMeta | None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """Whether a session was deleted, and who owned it: the stored owner field
    (Redis), or the user id itself (the hybrid's database)."""

    deleted: bool
    owner_field: bytes | None
    owner_value: bytes | None
    owner_user: str | None = None


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """What the per-user listing reads of one session."""

    storage_id: StorageId
    meta: SessionMeta | None
    ttl_ms: int
    client: bytes | None = None


@dataclass
class RedisSessionStorage:
    """The Redis layout; the engines hold one and call it with storage ids."""

    owner_fields: tuple[bytes, ...] = ()

    # -- load ---------------------------------------------------------------
    # A load is HGETALL + PTTL, both native: no script runs on the load of a
    # session that was touched recently (most loads).  When the TTL is due to
    # slide, the touch script is sent right after and its reply read at the
    # connection's next use, so the request still waits for one round trip.
    def load(
        self, sid: StorageId, touch_interval_ms: int, client: RequestClient | None = None
    ) -> StoredSession | None:
        key = session_redis_key(sid)
        with translate_outages("load a session"):
            redis_client = get_client()
            stored = _parse_load(execute(redis_client, [("HGETALL", key), ("PTTL", key)]))
            if stored is not None:
                later = _after_load(sid, stored, touch_interval_ms, client)
                if later:
                    send_later(redis_client, later)
        return stored

    async def aload(
        self, sid: StorageId, touch_interval_ms: int, client: RequestClient | None = None
    ) -> StoredSession | None:
        key = session_redis_key(sid)
        with translate_outages("load a session"):
            redis_client = get_async_client()
            stored = _parse_load(await aexecute(redis_client, [("HGETALL", key), ("PTTL", key)]))
            if stored is not None:
                later = _after_load(sid, stored, touch_interval_ms, client)
                if later:
                    await asend_later(redis_client, later)
        return stored

    # -- write --------------------------------------------------------------
    def write(self, sid: StorageId, plan: WritePlan) -> WriteResult:
        with translate_outages("save a session"):
            client = get_client()
            listing = _listing_for_write(sid, plan)
            replies = _checked(run_calls(client, _write_calls(sid, plan) + listing), len(listing))
            result = _parse_write(replies[0])
            if plan.index is not None and plan.index.add_user and result.status != 1:
                # The pipelined index entry points at nothing: take it back.
                run_pipeline(client, [_index_call(plan.index.add_user, None, 0, [sid])])
        return result

    async def awrite(self, sid: StorageId, plan: WritePlan) -> WriteResult:
        with translate_outages("save a session"):
            client = get_async_client()
            listing = _listing_for_write(sid, plan)
            calls = _write_calls(sid, plan) + listing
            replies = _checked(await arun_calls(client, calls), len(listing))
            result = _parse_write(replies[0])
            if plan.index is not None and plan.index.add_user and result.status != 1:
                await arun_pipeline(client, [_index_call(plan.index.add_user, None, 0, [sid])])
        return result

    # -- delete -------------------------------------------------------------
    # A caller that knows the session's owner (it loaded the session) names it,
    # and the index entry goes in the same round trip; the reply still says who
    # the owner really was, for the caller to check.
    def delete(self, sid: StorageId, expected_owner: str | None = None) -> DeleteResult:
        with translate_outages("delete a session"):
            calls = self._delete_calls(sid, expected_owner) + forget_commands([sid])
            replies = _checked(run_calls(get_client(), calls), 2)
        return _parse_delete(replies[0])

    async def adelete(self, sid: StorageId, expected_owner: str | None = None) -> DeleteResult:
        with translate_outages("delete a session"):
            calls = self._delete_calls(sid, expected_owner) + forget_commands([sid])
            replies = _checked(await arun_calls(get_async_client(), calls), 2)
        return _parse_delete(replies[0])

    def _delete_calls(self, sid: StorageId, expected_owner: str | None) -> list[Call]:
        calls: list[Call] = [(delete_script, [session_redis_key(sid)], self.owner_fields)]
        if expected_owner is not None:
            calls.append(_index_call(expected_owner, None, 0, [sid]))
        return calls

    def delete_if_owned(self, sid: StorageId, owner: tuple[bytes, bytes]) -> bool:
        with translate_outages("revoke a session"):
            client = get_client()
            deleted = bool(delete_if_owned_script(client, [session_redis_key(sid)], owner))
            if deleted:
                send_later(client, forget_commands([sid]))
        return deleted

    async def adelete_if_owned(self, sid: StorageId, owner: tuple[bytes, bytes]) -> bool:
        with translate_outages("revoke a session"):
            client = get_async_client()
            deleted = bool(
                await delete_if_owned_script.acall(client, [session_redis_key(sid)], owner)
            )
            if deleted:
                await asend_later(client, forget_commands([sid]))
        return deleted

    def delete_all_if_owned(
        self, sids: Sequence[StorageId], owner: tuple[bytes, bytes]
    ) -> list[StorageId]:
        """Revoke many sessions of one owner in one round trip; returns those ended."""
        if not sids:
            return []
        with translate_outages("revoke sessions"):
            client = get_client()
            replies = run_pipeline(client, _owned_delete_calls(sids, owner))
            ended = [sid for sid, deleted in zip(sids, replies, strict=True) if deleted]
            send_later(client, forget_commands(ended))
        return ended

    async def adelete_all_if_owned(
        self, sids: Sequence[StorageId], owner: tuple[bytes, bytes]
    ) -> list[StorageId]:
        if not sids:
            return []
        with translate_outages("revoke sessions"):
            client = get_async_client()
            replies = await arun_pipeline(client, _owned_delete_calls(sids, owner))
            ended = [sid for sid, deleted in zip(sids, replies, strict=True) if deleted]
            await asend_later(client, forget_commands(ended))
        return ended

    # -- exists -------------------------------------------------------------
    def exists(self, sid: StorageId) -> bool:
        with translate_outages("check a session"):
            return bool(get_client().exists(session_redis_key(sid)))

    async def aexists(self, sid: StorageId) -> bool:
        with translate_outages("check a session"):
            return bool(await get_async_client().exists(session_redis_key(sid)))

    # -- per-user index -----------------------------------------------------
    def update_index(
        self, user_id: str, add: StorageId | None, deadline: int, remove: Sequence[StorageId] = ()
    ) -> int:
        with translate_outages("update a user's session index"):
            reply = run_pipeline(get_client(), [_index_call(user_id, add, deadline, remove)])
        return int(reply[0])

    async def aupdate_index(
        self, user_id: str, add: StorageId | None, deadline: int, remove: Sequence[StorageId] = ()
    ) -> int:
        with translate_outages("update a user's session index"):
            reply = await arun_pipeline(
                get_async_client(), [_index_call(user_id, add, deadline, remove)]
            )
        return int(reply[0])

    def user_sessions(
        self, user_id: str, *, drop_broken_index: bool = False
    ) -> list[SessionSummary]:
        """The live sessions of a user (stale index entries are pruned on the way).

        An index key that is not a sorted set lists as no sessions, with a
        warning; ``drop_broken_index`` deletes it as well.
        """
        client = get_client()
        key = user_index_redis_key(user_id)
        with translate_outages("list a user's sessions"):
            try:
                sids = _decode_ids(client.zrangebyscore(key, int(time.time()), "+inf"))
            except ResponseError as err:
                _raise_unless_wrong_type(err)
                _warn_broken_index(key, drop_broken_index and _drop_broken_index(client, key))
                return []
            if not sids:
                return []
            pipe = client.pipeline(transaction=False)
            for sid in sids:
                _queue_summary(pipe, sid)
            summaries, stale = _parse_summaries(sids, pipe.execute())
            if stale:
                self.forget_user_sessions(user_id, stale)
        return summaries

    async def auser_sessions(
        self, user_id: str, *, drop_broken_index: bool = False
    ) -> list[SessionSummary]:
        client = get_async_client()
        key = user_index_redis_key(user_id)
        with translate_outages("list a user's sessions"):
            try:
                sids = _decode_ids(await client.zrangebyscore(key, int(time.time()), "+inf"))
            except ResponseError as err:
                _raise_unless_wrong_type(err)
                dropped = drop_broken_index and await _adrop_broken_index(client, key)
                _warn_broken_index(key, dropped)
                return []
            if not sids:
                return []
            pipe = client.pipeline(transaction=False)
            for sid in sids:
                _queue_summary(pipe, sid)
            summaries, stale = _parse_summaries(sids, await pipe.execute())
            if stale:
                await self.aforget_user_sessions(user_id, stale)
        return summaries

    def forget_user_sessions(self, user_id: str, sids: Sequence[StorageId]) -> None:
        """Take ``sids`` out of the user's index; an index that is not a sorted set is deleted."""
        client = get_client()
        with translate_outages("update a user's session index"):
            try:
                run_pipeline(client, [_index_call(user_id, None, 0, sids)])
            except ResponseError as err:
                _raise_unless_wrong_type(err)
                key = user_index_redis_key(user_id)
                _warn_broken_index(key, _drop_broken_index(client, key))

    async def aforget_user_sessions(self, user_id: str, sids: Sequence[StorageId]) -> None:
        client = get_async_client()
        with translate_outages("update a user's session index"):
            try:
                await arun_pipeline(client, [_index_call(user_id, None, 0, sids)])
            except ResponseError as err:
                _raise_unless_wrong_type(err)
                key = user_index_redis_key(user_id)
                _warn_broken_index(key, await _adrop_broken_index(client, key))


def prune_index(client: redis.Redis, index_key: str, *, dry_run: bool) -> int:
    """Drop the entries of a user index whose session is gone; returns how many.

    Entries past their deadline go too (the index script prunes them on each
    update), and an index left empty is deleted.
    """
    sids = _decode_ids(client.zrange(index_key, 0, -1))
    if not sids:
        return 0
    pipe = client.pipeline(transaction=False)
    for sid in sids:
        pipe.exists(session_redis_key(sid))
    stale = [sid for sid, alive in zip(sids, pipe.execute(), strict=True) if not alive]
    if stale and not dry_run:
        index_update_script(client, [index_key], ["", 0, *stale])
    return len(stale)


def _raise_unless_wrong_type(err: ResponseError) -> None:
    # WRONGTYPE on an index key means corrupted data, handled by the caller; any
    # other ResponseError is a bug and must surface.
    if not str(err).startswith("WRONGTYPE"):
        raise err


def _warn_broken_index(key: str, dropped: bool) -> None:
    if dropped:
        logger.warning(
            "User index %s was not a sorted set and has been deleted; sessions it listed "
            "can no longer be listed or revoked and end at their expiry.",
            key,
        )
    else:
        logger.warning(
            "User index %s is not a sorted set, so that user's sessions cannot be listed; "
            "revoking the user's sessions or running clearsessions_elastic deletes it.",
            key,
        )


def _is_broken_index(key_type: bytes | str) -> bool:
    name = key_type.decode() if isinstance(key_type, bytes) else key_type
    return name not in {"zset", "none"}


def _drop_broken_index(client: Any, key: str) -> bool:
    """Delete ``key`` if it still is not a sorted set; True if it was deleted."""

    # WATCH: never delete an index somebody rebuilt between the error and now.
    def drop(pipe: Any) -> bool:
        if not _is_broken_index(pipe.type(key)):
            return False
        pipe.multi()
        pipe.delete(key)
        return True

    return bool(client.transaction(drop, key, value_from_callable=True))


async def _adrop_broken_index(client: Any, key: str) -> bool:
    async def drop(pipe: Any) -> bool:
        if not _is_broken_index(await pipe.type(key)):
            return False
        pipe.multi()
        pipe.delete(key)
        return True

    return bool(await client.transaction(drop, key, value_from_callable=True))


def estimated_deadline(absolute_timeout: int) -> int:
    """An upper bound for a deadline the server has not reported yet."""
    return int(time.time()) + absolute_timeout + _DEADLINE_SKEW_MARGIN


def _index_call(
    user_id: str, add: StorageId | None, deadline: int, remove: Sequence[StorageId]
) -> ScriptCall:
    return (
        index_update_script,
        [user_index_redis_key(user_id)],
        [add or "", deadline, *remove],
    )


def _owned_delete_calls(sids: Sequence[StorageId], owner: tuple[bytes, bytes]) -> list[ScriptCall]:
    return [(delete_if_owned_script, [session_redis_key(sid)], owner) for sid in sids]


def _write_calls(sid: StorageId, plan: WritePlan) -> list[Call]:
    args: list[Any] = [
        "c" if plan.create else "u",
        plan.idle,
        plan.absolute,
        plan.fixed_expiry,
        plan.inherited_meta.encode() if plan.inherited_meta is not None else b"",
        plan.deadline_cap,
        len(plan.sets) + (plan.client is not None),
    ]
    for name, value in plan.sets.items():
        args += (name, value)
    if plan.client is not None:
        args += (CLIENT_FIELD, plan.client)
    args += plan.deletes
    calls: list[Call] = [(save_script, [session_redis_key(sid)], args)]
    index = plan.index
    if index is not None:
        if index.remove_user is not None:
            calls.append(_index_call(index.remove_user, None, 0, [sid]))
        if index.add_user is not None:
            calls.append(_index_call(index.add_user, sid, index.deadline, ()))
    return calls


def hash_fields(reply: Any) -> dict[bytes, bytes]:
    """An HGETALL reply as a dict, whichever protocol the connection speaks."""
    if isinstance(reply, dict):  # RESP3 (redis-py's default since 8.0): a map
        return reply
    iterator = iter(reply)  # RESP2: field, value, field, value...
    return dict(zip(iterator, iterator, strict=False))


def _parse_load(replies: list[Any]) -> StoredSession | None:
    flat, ttl_ms = replies
    if isinstance(flat, ResponseError):
        if str(flat).startswith("WRONGTYPE"):
            raise CorruptSessionData("the session key holds a value that is not a hash")
        raise flat
    if isinstance(ttl_ms, Exception):
        raise ttl_ms
    if not flat:
        return None
    fields = hash_fields(flat)
    raw_meta = fields.pop(META_FIELD, None)
    if raw_meta is None:
        # Every save writes it; a hash without it is not a session of ours.
        raise CorruptSessionData("the session has no metadata field")
    client = fields.pop(CLIENT_FIELD, None)
    return StoredSession(fields, SessionMeta.decode(raw_meta), int(ttl_ms), client=client)


def _touch(stored: StoredSession, touch_interval_ms: int) -> bool:
    """Whether sliding the TTL is due (then ``touched_ttl_ms`` says to what).

    The same rule as the TOUCH script, which checks it again atomically with
    the server's clock before it extends anything.
    """
    meta = stored.meta
    if meta.idle <= 0 or stored.ttl_ms < 0:
        return False
    target = min(meta.idle * 1000, meta.deadline * 1000 - int(time.time() * 1000))
    throttle = min(touch_interval_ms, meta.idle * 500)
    if target <= 0 or target - stored.ttl_ms <= throttle:
        return False
    stored.touched_ttl_ms = target
    return True


def _touch_command(key: str, touch_interval_ms: int, client_field: bytes = b"") -> tuple[Any, ...]:
    # EVAL, not EVALSHA: a reply read later cannot trigger a NOSCRIPT reload;
    # Redis caches the compiled script by its SHA either way.
    return ("EVAL", TOUCH, 1, key, touch_interval_ms, client_field)


def _client_due(
    stored: StoredSession, client: RequestClient | None, now: int, interval: int
) -> bool:
    """Whether to store the request's client: it changed, or its last-seen time
    is older than the touch interval (so "last seen" is as fresh as the TTL)."""
    if client is None:
        return False
    raw = stored.client
    if not client.matches(raw):
        return True
    record = decode_client(raw)
    return record is None or now - record.last_seen >= interval


def _after_load(
    sid: StorageId, stored: StoredSession, touch_interval_ms: int, client: RequestClient | None
) -> list[Command]:
    """What a load sends without waiting: a due touch, the client, the listing."""
    touch_due = _touch(stored, touch_interval_ms)
    now = int(time.time())
    client_due = _client_due(stored, client, now, max(touch_interval_ms // 1000, 1))
    if not (touch_due or client_due):
        return []
    stamp = client.stamp(now) if client is not None and client_due else b""
    key = session_redis_key(sid)
    expires_at = now + stored.touched_ttl_ms // 1000 if touch_due else None
    return [_touch_command(key, touch_interval_ms, stamp), *seen_commands(sid, now, expires_at)]


def _listing_for_write(sid: StorageId, plan: WritePlan) -> list[Call]:
    # Sent with the save, before its reply: the expiry is the engine's estimate.
    return [*seen_commands(sid, int(time.time()), plan.expires_hint or None)]


def _checked(replies: list[Any], listing: int) -> list[Any]:
    """Raise the first error among the replies that matter.

    The listing commands come last in a pipeline (see listing_index.py) and
    their errors (a listing set of the wrong type) never fail a save or a
    delete: the admin list reports such a set, and the GC replaces it.
    """
    first_error(replies[: len(replies) - listing])
    return replies


def _parse_write(reply: Any) -> WriteResult:
    status, meta = int(reply[0]), reply[1]
    return WriteResult(status, SessionMeta.decode(meta) if meta else None)


def _parse_delete(reply: Any) -> DeleteResult:
    deleted, field_name, value = reply
    return DeleteResult(bool(deleted), field_name or None, value or None)


def _decode_ids(raw: Sequence[Any]) -> list[StorageId]:
    return [StorageId(item.decode("ascii")) for item in raw]


def _queue_summary(pipe: Any, sid: StorageId) -> None:
    key = session_redis_key(sid)
    pipe.hmget(key, [META_FIELD, CLIENT_FIELD])
    pipe.pttl(key)


def _parse_summaries(
    sids: list[StorageId], replies: list[Any]
) -> tuple[list[SessionSummary], list[StorageId]]:
    summaries: list[SessionSummary] = []
    stale: list[StorageId] = []
    for index, sid in enumerate(sids):
        (raw_meta, client), ttl_ms = replies[2 * index], replies[2 * index + 1]
        if ttl_ms == -2:  # the key is gone: expired idle, deleted, evicted
            stale.append(sid)
            continue
        try:
            meta = SessionMeta.decode(raw_meta) if raw_meta else None
        except CorruptSessionData:
            meta = None
        summaries.append(SessionSummary(sid, meta, int(ttl_ms), client))
    return summaries, stale
