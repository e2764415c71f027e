"""List and end a user's sessions, whichever elastic engine is configured.

The per-user functions cost work in proportion to that user's sessions: they read
the user's index, never SCAN.  ``session_stats()`` is the exception: a whole-store
report, one bounded SCAN pass (see docs/operations.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.contrib.auth import SESSION_KEY as USER_ID_KEY
from django.utils.module_loading import import_string

from .client import decode_client
from .codec import codec_for
from .engine import configured_storage
from .keys import StorageId, is_valid_session_key, is_valid_storage_id, storage_id
from .signals import session_revoked
from .stats import SessionStats, session_stats
from .storage.hybrid import HybridStorage
from .storage.redis import RedisSessionStorage, SessionSummary

__all__ = [
    "SessionInfo",
    "SessionStats",
    "alist_sessions",
    "arevoke_session",
    "arevoke_user_sessions",
    "list_sessions",
    "revoke_session",
    "revoke_user_sessions",
    "session_stats",
]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One live session of a user, as shown on a "your sessions" page."""

    storage_id: StorageId
    created: datetime | None
    expires: datetime
    # To TOUCH_INTERVAL (hybrid engine: to DATABASE_TOUCH_DRIFT).
    last_seen: datetime | None
    is_current: bool
    # The IP address and device ("Firefox 128 on Windows") of its last request
    # seen (None / "" for a session used by no request through the middleware).
    ip: str | None = None
    device: str = ""


def _storage() -> RedisSessionStorage | HybridStorage:
    return configured_storage("elastic_sessions.api")


def user_id_of(user: Any) -> str:
    """The string Django's ``login()`` stores for ``user`` (accepts a pk too)."""
    meta = getattr(user, "_meta", None)
    if meta is not None:
        return str(meta.pk.value_to_string(user))
    return str(user)


def _owner_field(user_id: str) -> tuple[bytes, bytes]:
    codec = codec_for(import_string(settings.SESSION_SERIALIZER))
    return codec.encode_item(USER_ID_KEY, user_id)


def _current_sid(current_session_key: str | None) -> StorageId | None:
    if current_session_key and is_valid_session_key(current_session_key):
        return storage_id(current_session_key)
    return None


def _info(summary: SessionSummary, now: float, current: StorageId | None) -> SessionInfo:
    expires_at = now + summary.ttl_ms / 1000
    meta = summary.meta
    last_seen = None
    client = decode_client(summary.client)
    if client is not None:
        last_seen = datetime.fromtimestamp(client.last_seen, UTC)
    elif meta is not None and meta.idle > 0 and expires_at < meta.deadline - 1:
        # No client recorded (no request through the middleware): the load
        # that slid the expiry last, to TOUCH_INTERVAL.
        last_seen = datetime.fromtimestamp(expires_at - meta.idle, UTC)
    return SessionInfo(
        storage_id=summary.storage_id,
        created=datetime.fromtimestamp(meta.created, UTC) if meta else None,
        expires=datetime.fromtimestamp(expires_at, UTC),
        last_seen=last_seen,
        is_current=summary.storage_id == current,
        ip=client.ip if client else None,
        device=client.device if client else "",
    )


def _sorted(summaries: list[SessionSummary], current_session_key: str | None) -> list[SessionInfo]:
    now = time.time()
    current = _current_sid(current_session_key)
    infos = [_info(summary, now, current) for summary in summaries]
    return sorted(infos, key=lambda info: (not info.is_current, -info.expires.timestamp()))


def list_sessions(user: Any, *, current_session_key: str | None = None) -> list[SessionInfo]:
    """The user's live sessions, the current one first, then by latest expiry.

    A user index that is not a sorted set (corrupted data) lists as no sessions
    and logs a warning naming its key.
    """
    return _sorted(_storage().user_sessions(user_id_of(user)), current_session_key)


async def alist_sessions(user: Any, *, current_session_key: str | None = None) -> list[SessionInfo]:
    return _sorted(await _storage().auser_sessions(user_id_of(user)), current_session_key)


def revoke_session(user: Any, sid: str) -> bool:
    """End one session of ``user``; False if it is not theirs or already gone.

    A storage id of another user's session is refused atomically, so an id taken
    from a form can never end somebody else's session.
    """
    if not is_valid_storage_id(sid):
        return False
    storage, user_id = _storage(), user_id_of(user)
    deleted = storage.delete_if_owned(StorageId(sid), _owner_field(user_id))
    storage.forget_user_sessions(user_id, [StorageId(sid)])
    if deleted:
        session_revoked.send(revoke_session, user_id=user_id, storage_ids=[sid])
    return deleted


async def arevoke_session(user: Any, sid: str) -> bool:
    if not is_valid_storage_id(sid):
        return False
    storage, user_id = _storage(), user_id_of(user)
    deleted = await storage.adelete_if_owned(StorageId(sid), _owner_field(user_id))
    await storage.aforget_user_sessions(user_id, [StorageId(sid)])
    if deleted:
        await session_revoked.asend(revoke_session, user_id=user_id, storage_ids=[sid])
    return deleted


def revoke_user_sessions(user: Any, *, keep_session_key: str | None = None) -> int:
    """End every session of ``user`` ("log out everywhere"); returns how many.

    ``keep_session_key`` spares that one session ("sign out everywhere else").
    A user index that is not a sorted set is deleted with a warning; the sessions
    it listed cannot be found, so they are not counted and end at their expiry.
    """
    storage, user_id = _storage(), user_id_of(user)
    keep = _current_sid(keep_session_key)
    owner = _owner_field(user_id)
    # A broken index is deleted on the way: the user's next login starts a sane one.
    summaries = storage.user_sessions(user_id, drop_broken_index=True)
    candidates = [s.storage_id for s in summaries if s.storage_id != keep]
    ended = storage.delete_all_if_owned(candidates, owner)
    if ended:
        storage.forget_user_sessions(user_id, ended)
        session_revoked.send(revoke_user_sessions, user_id=user_id, storage_ids=ended)
    return len(ended)


async def arevoke_user_sessions(user: Any, *, keep_session_key: str | None = None) -> int:
    storage, user_id = _storage(), user_id_of(user)
    keep = _current_sid(keep_session_key)
    owner = _owner_field(user_id)
    summaries = await storage.auser_sessions(user_id, drop_broken_index=True)
    candidates = [s.storage_id for s in summaries if s.storage_id != keep]
    ended = await storage.adelete_all_if_owned(candidates, owner)
    if ended:
        await storage.aforget_user_sessions(user_id, ended)
        await session_revoked.asend(revoke_user_sessions, user_id=user_id, storage_ids=ended)
    return len(ended)
