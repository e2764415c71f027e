"""Every active session, page by page, for the admin: work in proportion to the page.

The Redis engine keeps two sorted sets of all its sessions beside the per-user
indexes: by last seen and by expiry (see :mod:`elastic_sessions.storage.listing_index`).
A page is ranks in one of them, then one pipelined read of the page's sessions,
so it costs the same with a thousand sessions or a million.  The hybrid engine
lists its database rows (the database holds every one of its sessions), with
the same bounds from its indexes, so the list works while Redis is down.
"""

from __future__ import annotations

from collections.abc import Sequence

from .engine import configured_storage
from .keys import StorageId, is_valid_storage_id
from .rows import (
    COUNT_LIMIT,
    MAX_SEARCHED_USERS,
    MAX_USER_SESSIONS,
    ORDERS,
    ListQuery,
    Order,
    SessionCounts,
    SessionDetail,
    SessionPage,
    SessionRow,
    session_codec,
)
from .signals import session_revoked
from .storage import listing_database, listing_redis
from .storage.hybrid import HybridStorage

__all__ = [
    "COUNT_LIMIT",
    "MAX_SEARCHED_USERS",
    "MAX_USER_SESSIONS",
    "ORDERS",
    "ListQuery",
    "Order",
    "SessionCounts",
    "SessionDetail",
    "SessionPage",
    "SessionRow",
    "counts",
    "detail",
    "list_page",
    "revoke",
]


def list_page(query: ListQuery, number: int, per_page: int = 50) -> SessionPage:
    """Page ``number`` (from 1; past the end: the last page) of the sessions ``query`` matches.

    Raises ``SessionStoreUnavailable`` when the store it lists cannot be read.
    """
    number, per_page = max(1, number), max(1, per_page)
    if _is_hybrid():
        return listing_database.page(query, number, per_page)
    return listing_redis.page(query, number, per_page)


def counts() -> SessionCounts:
    """Active sessions, those expiring within the hour, those idle for a day."""
    if _is_hybrid():
        return listing_database.counts()
    return listing_redis.counts()


def detail(sid: str) -> SessionDetail | None:
    """One session by storage id; None for an id of the wrong shape or a session that is gone."""
    if not is_valid_storage_id(sid):
        return None
    if _is_hybrid():
        return listing_database.detail(StorageId(sid))
    return listing_redis.detail(StorageId(sid))


def revoke(sids: Sequence[str]) -> list[tuple[StorageId, str | None]]:
    """End these sessions whoever owns them; returns ``(storage id, owner's user id)``
    of each one ended (ids of the wrong shape and sessions already gone are skipped).

    Sends ``session_revoked`` once per owner, as the per-user API does.
    """
    storage = configured_storage("elastic_sessions.listing")
    ended: list[tuple[StorageId, str | None]] = []
    for raw in dict.fromkeys(sids):
        if not is_valid_storage_id(raw):
            continue
        sid = StorageId(raw)
        result = storage.delete(sid)
        if not result.deleted:
            continue
        owner = result.owner_user
        if owner is None and result.owner_field and result.owner_value is not None:
            owner = str(session_codec().decode_item(result.owner_field, result.owner_value)[1])
            storage.forget_user_sessions(owner, [sid])
        ended.append((sid, owner))
    by_owner: dict[str | None, list[str]] = {}
    for sid, owner in ended:
        by_owner.setdefault(owner, []).append(sid)
    for owner, owned in by_owner.items():
        session_revoked.send(revoke, user_id=owner, storage_ids=owned)
    return ended


def _is_hybrid() -> bool:
    return isinstance(configured_storage("the admin session list"), HybridStorage)
