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
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from .keys import StorageId

Order = Literal["last_seen", "-last_seen", "expires", "-expires"]
ORDERS: tuple[Order, ...] = ("-last_seen", "last_seen", "expires", "-expires")
# A search by username or email lists the sessions of at most this many users.
MAX_SEARCHED_USERS = 50
# ...and at most this many sessions in all (sorted and paged in Python).
MAX_USER_SESSIONS = 1000


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One session as the admin list shows it (None: not known for this session)."""

    storage_id: StorageId
    user_id: str | None
    created: datetime | None
    last_seen: datetime | None
    expires: datetime | None
    ip: str | None
    # The browser and OS in words ("Firefox 128 on Windows"), or "".
    device: str
    # Bytes stored for this session (Redis: MEMORY USAGE; database: field values).
    size: int
    # Where it was read: "redis" or "database".
    store: str


@dataclass(frozen=True, slots=True)
class SessionDetail:
    """One session with its decoded items (None when they cannot be decoded)."""

    row: SessionRow
    data: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What to list.  The filters combine; ``user_ids`` () means "nobody matched".

    ``expiring_within`` lists by expiry and ``idle_for`` by last seen: with one
    of them, ``order`` is kept only if it sorts by that same column (an index
    can be ranged and ordered on one column at a time).
    """

    order: Order = "-last_seen"
    user_ids: tuple[str, ...] | None = None
    expiring_within: int | None = None
    idle_for: int | None = None


@dataclass(frozen=True, slots=True)
class SessionPage:
    rows: list[SessionRow]
    number: int
    per_page: int
    # Sessions matching the query; a lower bound when ``total_is_lower_bound``
    # (the database counts at most COUNT_LIMIT rows, to stay bounded).
    total: int
    total_is_lower_bound: bool
    # The order actually applied (see ListQuery).
    order: Order

    @property
    def num_pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_next(self) -> bool:
        return self.number < self.num_pages

    @property
    def has_previous(self) -> bool:
        return self.number > 1


@dataclass(frozen=True, slots=True)
class SessionCounts:
    """The figures at the top of the admin list."""

    active: int
    expiring_soon: int  # within the next hour
    idle: int  # not seen for a day or more
    lower_bound: bool  # the database counted up to COUNT_LIMIT


def list_page(query: ListQuery, number: int, per_page: int = 50) -> SessionPage:
    """Page ``number`` (from 1; past the end: the last page) of the sessions ``query`` matches.

    Raises ``SessionStoreUnavailable`` when the store it lists cannot be read.
    """
    raise NotImplementedError


def counts() -> SessionCounts:
    raise NotImplementedError


def detail(sid: str) -> SessionDetail | None:
    """One session by storage id; None for an id of the wrong shape or a session that is gone."""
    raise NotImplementedError


def revoke(sids: Sequence[str]) -> list[tuple[StorageId, str | None]]:
    """End these sessions whoever owns them; returns ``(storage id, owner's user id)``
    of each one ended (ids of the wrong shape and sessions already gone are skipped)."""
    raise NotImplementedError
