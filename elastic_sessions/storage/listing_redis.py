"""The admin listing of the Redis engine: ranks in a listing set, then the page's hashes.

Per page: one script call for the ranks (listing_index.RANGE_PAGE), one
pipelined read of the page's sessions (HMGET + PTTL + MEMORY USAGE each), and at
most one bounded prune of expired entries.  Nothing scales with the number of
sessions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import SESSION_KEY as USER_ID_KEY
from redis.exceptions import ResponseError

from ..client import CLIENT_FIELD, decode_client
from ..codec import META_FIELD, SessionMeta, field_variants
from ..conf import elastic_settings
from ..connection import get_client, translate_outages
from ..encryption import open_fields
from ..exceptions import CorruptSessionData
from ..keys import StorageId, listing_redis_keys, session_redis_key, user_index_redis_key
from ..rows import (
    IDLE,
    MAX_USER_SESSIONS,
    SOON,
    ListQuery,
    Order,
    SessionCounts,
    SessionDetail,
    SessionPage,
    SessionRow,
    decode_items,
    now,
    session_codec,
)
from .listing_index import decode_members, forget_commands, prune_listing, range_page_script
from .redis import hash_fields
from .wire import execute, send_later

logger = logging.getLogger(__name__)

_OWNER_FIELDS = field_variants(USER_ID_KEY)


def page(query: ListQuery, number: int, per_page: int) -> SessionPage:
    client = get_client()
    with translate_outages("list sessions"):
        if query.user_ids is not None:
            return _users_page(client, query, number, per_page)
        if not elastic_settings.LISTING_INDEX:
            return SessionPage([], 1, per_page, 0, False, query.order, needs_user=True)
        _prune(client)
        key, low, high, order = _range(query)
        reverse = order.startswith("-")
        offset = (number - 1) * per_page
        total, flat = _range_page(
            client, key, low, high, offset=offset, count=per_page, reverse=reverse
        )
        if offset >= total > 0:  # past the end: the last page
            number = -(-total // per_page)
            offset = (number - 1) * per_page
            total, flat = _range_page(
                client, key, low, high, offset=offset, count=per_page, reverse=reverse
            )
        sids = decode_members(flat[0::2])
        rows = _rows(client, sids)
    return SessionPage(rows, number, per_page, total, False, order)


def counts() -> SessionCounts:
    if not elastic_settings.LISTING_INDEX:
        return SessionCounts(0, 0, 0, False, available=False)
    client = get_client()
    seen, expiry = listing_redis_keys()
    at = now()
    with translate_outages("count sessions"):
        _prune(client)
        replies = execute(
            client,
            [
                ("ZCOUNT", expiry, at, "+inf"),
                ("ZCOUNT", expiry, at, at + SOON),
                ("ZCOUNT", seen, "-inf", at - IDLE),
            ],
        )
    figures = [_count(reply) for reply in replies]
    return SessionCounts(figures[0], figures[1], figures[2], False)


def detail(sid: StorageId) -> SessionDetail | None:
    client = get_client()
    key = session_redis_key(sid)
    with translate_outages("read a session"):
        raw, ttl_ms, size = execute(
            client, [("HGETALL", key), ("PTTL", key), ("MEMORY", "USAGE", key)]
        )
    if isinstance(raw, ResponseError) or not raw or not isinstance(ttl_ms, int) or ttl_ms == -2:
        return None
    fields = hash_fields(raw)
    raw_meta = fields.pop(META_FIELD, None)
    client_field = fields.pop(CLIENT_FIELD, None)
    owner = _owner(fields.get(name) for name in _OWNER_FIELDS)
    row = _row(
        sid, raw_meta=raw_meta, client_field=client_field, owner=owner, ttl_ms=ttl_ms, size=size
    )
    return SessionDetail(row, decode_items(open_fields(sid, fields).fields, session_codec()))


def _range(query: ListQuery) -> tuple[str, str | int, str | int, Order]:
    """The set, score range and order a query is listed by (see ListQuery)."""
    seen, expiry = listing_redis_keys()
    at = now()
    if query.expiring_within is not None:
        order = query.order if query.order.endswith("expires") else "expires"
        return expiry, at, at + query.expiring_within, order
    if query.idle_for is not None:
        order = query.order if query.order.endswith("last_seen") else "-last_seen"
        return seen, "-inf", at - query.idle_for, order
    if query.order.endswith("expires"):
        return expiry, at, "+inf", query.order
    return seen, "-inf", "+inf", query.order


def _range_page(
    client: Any, key: str, low: Any, high: Any, *, offset: int, count: int, reverse: bool
) -> tuple[int, list[Any]]:
    try:
        total, flat = range_page_script(
            client, [key], [low, high, offset, count, "1" if reverse else "0"]
        )
    except ResponseError as err:
        if not str(err).startswith("WRONGTYPE"):
            raise
        logger.warning(
            "Session listing set %s is not a sorted set; clearsessions_elastic replaces it.", key
        )
        return 0, []
    return int(total), list(flat)


def _prune(client: Any) -> None:
    # Entries of sessions that expired since the last GC: one bounded batch.
    try:
        prune_listing(client, dry_run=False, batches=1)
    except ResponseError as err:
        if not str(err).startswith("WRONGTYPE"):
            raise


def _users_page(client: Any, query: ListQuery, number: int, per_page: int) -> SessionPage:
    at = now()
    sids: list[StorageId] = []
    for user_id in query.user_ids or ():
        try:
            # LIMIT: a user with a million sessions still costs one page's worth.
            found = client.zrangebyscore(
                user_index_redis_key(user_id),
                at,
                "+inf",
                start=0,
                num=MAX_USER_SESSIONS - len(sids),
            )
        except ResponseError as err:
            if not str(err).startswith("WRONGTYPE"):
                raise
            continue  # a broken index (the per-user API logs and repairs it)
        sids += decode_members(found)
        if len(sids) >= MAX_USER_SESSIONS:
            break
    rows = _rows(client, list(dict.fromkeys(sids))[:MAX_USER_SESSIONS])
    rows = [row for row in rows if _matches(row, query, at)]
    order = query.order
    if query.expiring_within is not None and not order.endswith("expires"):
        order = "expires"
    if query.idle_for is not None and not order.endswith("last_seen"):
        order = "-last_seen"
    rows.sort(key=lambda row: _sort_key(row, order), reverse=order.startswith("-"))
    total = len(rows)
    number = min(number, max(1, -(-total // per_page)))
    start = (number - 1) * per_page
    return SessionPage(rows[start : start + per_page], number, per_page, total, False, order)


def _matches(row: SessionRow, query: ListQuery, at: int) -> bool:
    if query.expiring_within is not None and (
        row.expires is None or row.expires.timestamp() > at + query.expiring_within
    ):
        return False
    return not (
        query.idle_for is not None
        and row.last_seen is not None
        and row.last_seen.timestamp() > at - query.idle_for
    )


def _sort_key(row: SessionRow, order: Order) -> float:
    value = row.expires if order.endswith("expires") else row.last_seen
    return value.timestamp() if value is not None else 0.0


def _rows(client: Any, sids: list[StorageId]) -> list[SessionRow]:
    """The page's sessions in one pipelined read; gone ones are dropped and unlisted."""
    if not sids:
        return []
    commands: list[tuple[Any, ...]] = []
    for sid in sids:
        key = session_redis_key(sid)
        commands += [
            ("HMGET", key, META_FIELD, CLIENT_FIELD, *_OWNER_FIELDS),
            ("PTTL", key),
            ("MEMORY", "USAGE", key),
        ]
    replies = execute(client, commands)
    rows: list[SessionRow] = []
    gone: list[StorageId] = []
    for index, sid in enumerate(sids):
        fields, ttl_ms, size = replies[3 * index : 3 * index + 3]
        if isinstance(ttl_ms, int) and ttl_ms == -2:
            gone.append(sid)
            continue
        if isinstance(fields, ResponseError):
            continue  # not a hash: the GC removes it
        raw_meta, client_field, *owners = fields
        rows.append(
            _row(
                sid,
                raw_meta=raw_meta,
                client_field=client_field,
                owner=_owner(owners),
                ttl_ms=ttl_ms,
                size=size,
            )
        )
    if gone:
        send_later(client, forget_commands(gone))
    return rows


def _owner(values: Iterable[bytes | None]) -> str | None:
    for name, value in zip(_OWNER_FIELDS, values, strict=False):
        if value is not None:
            try:
                return str(session_codec().decode_item(name, value)[1])
            except CorruptSessionData:
                return None
    return None


def _row(
    sid: StorageId,
    *,
    raw_meta: bytes | None,
    client_field: bytes | None,
    owner: str | None,
    ttl_ms: Any,
    size: Any,
) -> SessionRow:
    at = now()
    meta: SessionMeta | None
    try:
        meta = SessionMeta.decode(raw_meta) if raw_meta else None
    except CorruptSessionData:
        meta = None
    client = decode_client(client_field)
    ttl = int(ttl_ms) if isinstance(ttl_ms, int) and ttl_ms >= 0 else None
    return SessionRow(
        storage_id=sid,
        user_id=owner,
        created=_time(meta.created) if meta else None,
        last_seen=_time(client.last_seen) if client else None,
        expires=_time(at + ttl // 1000) if ttl is not None else None,
        ip=client.ip if client else None,
        device=client.device if client else "",
        size=int(size) if isinstance(size, int) else 0,
        store="redis",
    )


def _time(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _count(reply: Any) -> int:
    if isinstance(reply, ResponseError):
        if not str(reply).startswith("WRONGTYPE"):
            raise reply
        return 0
    return int(reply)
