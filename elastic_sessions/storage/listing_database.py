"""The admin listing of the hybrid engine: its database rows, which hold every session.

Per page: one bounded count (at most COUNT_LIMIT rows, through a LIMITed
subquery), one indexed query for the page's rows and one for their sizes.
Redis is not read, so the list works during an outage; last seen is as fresh
as the durable touches (DATABASE_TOUCH_DRIFT).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db.models import F, OrderBy, QuerySet, Sum
from django.db.models.functions import Length

from ..client import decode_client
from ..codec import SessionMeta
from ..encryption import open_fields
from ..keys import StorageId
from ..models import DurableSession, DurableSessionField
from ..rows import (
    COUNT_LIMIT,
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
from .hybrid import database_outages

_COLUMNS = ("pk", "user_id", "created", "last_seen", "expires_at", "client")


def page(query: ListQuery, number: int, per_page: int) -> SessionPage:
    at = now()
    rows = DurableSession.objects.filter(expires_at__gt=at)
    order = query.order
    if query.user_ids is not None:
        rows = rows.filter(user_id__in=query.user_ids)
    if query.expiring_within is not None:
        rows = rows.filter(expires_at__lte=at + query.expiring_within)
        order = order if order.endswith("expires") else "expires"
    if query.idle_for is not None:
        rows = rows.filter(last_seen__lte=at - query.idle_for)
        order = order if order.endswith("last_seen") else "-last_seen"
    limit = MAX_USER_SESSIONS if query.user_ids is not None else COUNT_LIMIT
    with database_outages("list sessions"):
        total = _bounded_count(rows, limit)
        number = min(number, max(1, -(-total // per_page)))
        start = (number - 1) * per_page
        found = list(
            rows.order_by(*_ordering(order)).values_list(*_COLUMNS)[start : start + per_page]
        )
        sizes = _sizes([row[0] for row in found])
    listed = [_row(values, sizes.get(values[0], 0)) for values in found]
    return SessionPage(listed, number, per_page, total, total > limit, order)


def counts() -> SessionCounts:
    at = now()
    live = DurableSession.objects.filter(expires_at__gt=at)
    with database_outages("count sessions"):
        active = _bounded_count(live, COUNT_LIMIT)
        soon = _bounded_count(live.filter(expires_at__lte=at + SOON), COUNT_LIMIT)
        idle = _bounded_count(live.filter(last_seen__lte=at - IDLE), COUNT_LIMIT)
    return SessionCounts(
        min(active, COUNT_LIMIT),
        min(soon, COUNT_LIMIT),
        min(idle, COUNT_LIMIT),
        max(active, soon, idle) > COUNT_LIMIT,
    )


def detail(sid: StorageId) -> SessionDetail | None:
    with database_outages("read a session"):
        values = (
            DurableSession.objects.filter(pk=sid, expires_at__gt=now())
            .values_list(*_COLUMNS)
            .first()
        )
        if values is None:
            return None
        fields = {
            bytes(name): bytes(value)
            for name, value in DurableSessionField.objects.filter(session_id=sid).values_list(
                "name", "value"
            )
        }
    size = sum(len(value) for value in fields.values())
    clear = open_fields(sid, fields).fields
    return SessionDetail(_row(values, size), decode_items(clear, session_codec()))


def _bounded_count(rows: QuerySet[DurableSession], limit: int) -> int:
    # COUNT over a LIMITed subquery: at most limit + 1 index entries are read.
    return rows.order_by()[: limit + 1].count()


def _ordering(order: Order) -> list[OrderBy | str]:
    column = "last_seen" if order.endswith("last_seen") else "expires_at"
    descending = order.startswith("-")
    first = F(column).desc(nulls_last=True) if descending else F(column).asc(nulls_first=True)
    return [first, "-pk" if descending else "pk"]


def _sizes(sids: list[str]) -> dict[str, int]:
    if not sids:
        return {}
    sums = (
        DurableSessionField.objects.filter(session_id__in=sids)
        .values("session_id")
        .annotate(size=Sum(Length("value")))
        .values_list("session_id", "size")
    )
    return {sid: int(size or 0) for sid, size in sums}


def _row(values: tuple[Any, ...], size: int) -> SessionRow:
    sid, user_id, created, last_seen, expires_at, raw_client = values
    client = decode_client(bytes(raw_client) if raw_client is not None else None)
    seen = client.last_seen if client is not None else last_seen
    if last_seen is not None and seen is not None:
        seen = max(seen, last_seen)
    meta = SessionMeta(created, 0, 0)
    return SessionRow(
        storage_id=StorageId(sid),
        user_id=user_id,
        created=_time(meta.created),
        last_seen=_time(seen) if seen is not None else None,
        expires=_time(expires_at),
        ip=client.ip if client else None,
        device=client.device if client else "",
        size=size,
        store="database",
    )


def _time(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
