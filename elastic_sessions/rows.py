"""What the admin shows of a session: the listing's types, shared by both stores."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from django.conf import settings
from django.utils.module_loading import import_string

from .codec import Codec, codec_for
from .exceptions import CorruptSessionData
from .keys import StorageId

Order = Literal["last_seen", "-last_seen", "expires", "-expires"]
ORDERS: tuple[Order, ...] = ("-last_seen", "last_seen", "expires", "-expires")
# A search by username or email lists the sessions of at most this many users.
MAX_SEARCHED_USERS = 50
# ...and at most this many sessions in all (sorted and paged in Python).
MAX_USER_SESSIONS = 1000
# The database counts matching rows up to this many (a COUNT(*) of a million
# rows is not bounded by the page); Redis counts exactly, in O(log n).
COUNT_LIMIT = 10_000
SOON = 3600
IDLE = 86400


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
    # True when the store cannot list all sessions (LISTING_INDEX is off):
    # only a search or a user filter lists anything.
    needs_user: bool = False

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
    available: bool = True  # False: LISTING_INDEX is off, nothing was counted


def session_codec() -> Codec:
    return codec_for(import_string(settings.SESSION_SERIALIZER))


def decode_items(fields: dict[bytes, bytes], codec: Codec) -> dict[str, Any]:
    """Every stored item decoded (for the detail page); an unreadable one shows as such."""
    items: dict[str, Any] = {}
    for name, raw in sorted(fields.items()):
        try:
            key, value = codec.decode_item(name, raw)
        except CorruptSessionData:
            key, value = repr(name), UNREADABLE
        items[key] = value
    return items


UNREADABLE = "(unreadable)"


def now() -> int:
    return int(time.time())
