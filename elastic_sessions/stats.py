"""How many sessions there are, whose, how big, and how healthy the stores are.

The figures are meant for operators and monitoring, so they must be safe to
collect on a large production Redis: keys are found with one ``SCAN ... COUNT``
pass over the prefix on each primary (never ``KEYS``), and each page of keys is
examined with one pipelined round trip, so Redis serves other clients between
pages.  The whole pass still costs work in proportion to the keys in the Redis
database (on a cluster, in all of its primaries').
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db.models import Count, Min, Q
from redis.exceptions import ResponseError

from .breaker import breaker_for
from .codec import META_FIELD
from .conf import elastic_settings
from .connection import get_client, primaries, translate_outages
from .engine import configured_storage
from .exceptions import SessionStoreUnavailable
from .keys import is_valid_storage_id, listing_redis_keys, storage_id_from_redis_key
from .models import DurableSession, RedisInvalidation
from .storage.hybrid import BREAKER_NAME, database_outages
from .storage.redis import RedisSessionStorage

__all__ = [
    "BreakerFigures",
    "DatabaseFigures",
    "MemoryEstimate",
    "RedisFigures",
    "SessionStats",
    "UserCount",
    "session_stats",
]

DEFAULT_TOP = 10
DEFAULT_SOON = 3600
DEFAULT_SAMPLE = 100
DEFAULT_BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class UserCount:
    """One user's live sessions; ``user`` is a user hash (redis) or a user id (hybrid)."""

    user: str
    sessions: int


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """``MEMORY USAGE`` of a sample of session hashes, scaled to all of them."""

    sampled: int
    bytes_per_session: int
    estimated_total_bytes: int


@dataclass(slots=True)
class RedisFigures:
    """What one SCAN pass over the key prefix (on every primary) found."""

    sessions: int = 0
    expiring_soon: int = 0
    without_ttl: int = 0
    without_metadata: int = 0
    user_indexes: int = 0
    indexed_sessions: int = 0
    other_keys: int = 0
    memory: MemoryEstimate | None = None
    evicted_keys: int | None = None


@dataclass(frozen=True, slots=True)
class DatabaseFigures:
    """The hybrid engine's durable rows and its queue of Redis invalidations."""

    rows: int
    live: int
    expired: int
    signed_in: int
    expiring_soon: int
    pending_invalidations: int
    oldest_invalidation_age: float | None


@dataclass(frozen=True, slots=True)
class BreakerFigures:
    """The hybrid engine's circuit breaker for Redis, as seen by *this process*."""

    state: str
    open_for_seconds: float | None


@dataclass(frozen=True, slots=True)
class SessionStats:
    """Every figure of :func:`session_stats`; :meth:`as_dict` is the ``--json`` shape."""

    engine: str
    generated_at: int
    soon_seconds: int
    redis: RedisFigures | None
    redis_error: str | None
    database: DatabaseFigures | None
    breaker: BreakerFigures | None
    top_users_by: str
    top_users: list[UserCount] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def session_stats(
    *,
    top: int = DEFAULT_TOP,
    soon: int = DEFAULT_SOON,
    sample: int = DEFAULT_SAMPLE,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> SessionStats:
    """Count the configured engine's sessions; see docs/operations.md for each figure.

    ``top`` users with the most sessions are listed, ``soon`` seconds is the
    "expiring soon" threshold, ``sample`` session hashes are measured with
    ``MEMORY USAGE`` (0 measures none) and ``batch_size`` is the ``SCAN COUNT``
    hint and the keys per pipelined round trip.

    Raises ``ValueError`` for a negative ``top``, ``soon`` or ``sample`` or a
    ``batch_size`` below 1, ``ImproperlyConfigured`` when ``SESSION_ENGINE`` is
    not an elastic engine and ``SessionStoreUnavailable`` when the store the
    engine cannot do without is unreachable: Redis for the redis engine, the
    database for the hybrid one (whose figures then report ``redis_error``
    instead of failing when only Redis is down).

    .. versionadded:: 0.1
    """
    if min(top, soon, sample) < 0 or batch_size < 1:
        raise ValueError("top, soon and sample must be 0 or more, batch_size 1 or more.")
    now = int(time.time())
    if isinstance(configured_storage("Session stats"), RedisSessionStorage):
        redis_figures, indexes = _scan_redis(now, soon, sample, batch_size, top)
        return SessionStats(
            engine="redis",
            generated_at=now,
            soon_seconds=soon,
            redis=redis_figures,
            redis_error=None,
            database=None,
            breaker=None,
            top_users_by="user_hash",
            top_users=indexes,
        )
    redis_error = None
    try:
        hybrid_redis, _ = _scan_redis(now, soon, sample, batch_size, 0)
    except SessionStoreUnavailable as err:
        # The hybrid engine serves from the database meanwhile: that is a
        # figure to report, not a reason to report nothing.
        hybrid_redis, redis_error = None, str(err)
    with database_outages("count the sessions"):
        database, top_users = _database_figures(now, soon, top)
    return SessionStats(
        engine="hybrid",
        generated_at=now,
        soon_seconds=soon,
        redis=hybrid_redis,
        redis_error=redis_error,
        database=database,
        breaker=_breaker_figures(),
        top_users_by="user_id",
        top_users=top_users,
    )


def _chunks(keys: Iterable[Any], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for raw in keys:
        chunk.append(raw.decode() if isinstance(raw, bytes) else str(raw))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _user_hash_of(key: str) -> str | None:
    prefix = f"{elastic_settings.KEY_PREFIX}:u:{{"
    if key.startswith(prefix) and key.endswith("}"):
        candidate = key[len(prefix) : -1]
        if is_valid_storage_id(candidate):  # user hashes have the same shape
            return candidate
    return None


def _scan_redis(
    now: int, soon: int, sample: int, batch_size: int, top: int
) -> tuple[RedisFigures, list[UserCount]]:
    figures = RedisFigures()
    heaviest: list[tuple[int, str]] = []
    sizes: list[int] = []
    samples_queued = 0
    evicted: list[int] = []
    client = get_client()
    with translate_outages("collect session stats"):
        # One pass for sessions and indexes alike: a MATCH does not spare Redis
        # the walk over the whole keyspace, so a second pattern would double it.
        pattern = f"{elastic_settings.KEY_PREFIX}:*"
        listing = listing_redis_keys()
        # A cluster's keyspace is the union of its primaries'; every command
        # below names only the key its primary returned, so it goes there too.
        for node in primaries(client):
            for keys in _chunks(node.scan_iter(match=pattern, count=batch_size), batch_size):
                pipe = node.pipeline(transaction=False)
                kinds: list[tuple[str, str]] = []
                for key in keys:
                    if storage_id_from_redis_key(key) is not None:
                        # The first keys SCAN returns are as good a sample as any:
                        # SCAN walks hash buckets, in no order of age or size.
                        measure = samples_queued < sample
                        samples_queued += measure
                        kinds.append(("measured" if measure else "session", key))
                        pipe.pttl(key)
                        pipe.hexists(key, META_FIELD)
                        if measure:
                            pipe.memory_usage(key)
                    elif key in listing:
                        continue  # the admin listing's sets (storage/listing_index.py)
                    elif (user := _user_hash_of(key)) is not None:
                        kinds.append(("index", user))
                        pipe.zcount(key, now, "+inf")
                    else:
                        figures.other_keys += 1
                replies = iter(pipe.execute(raise_on_error=False))
                for kind, name in kinds:
                    if kind == "index":
                        count = next(replies)
                        if isinstance(count, ResponseError):
                            _raise_unless_wrong_type(count)
                            figures.other_keys += 1
                        elif count:
                            figures.user_indexes += 1
                            figures.indexed_sessions += count
                            if top:
                                _keep_top(heaviest, top, (int(count), name))
                        continue
                    ttl_ms, has_meta = next(replies), next(replies)
                    size = next(replies) if kind == "measured" else None
                    if _count_session(figures, ttl_ms, has_meta, soon) and isinstance(size, int):
                        sizes.append(size)
            node_evicted = node.info("stats").get("evicted_keys")
            if node_evicted is not None:
                evicted.append(int(node_evicted))
    figures.evicted_keys = sum(evicted) if evicted else None
    if sizes:
        per_session = round(sum(sizes) / len(sizes))
        figures.memory = MemoryEstimate(len(sizes), per_session, per_session * figures.sessions)
    top_users = [UserCount(user, count) for count, user in sorted(heaviest, reverse=True)]
    return figures, top_users


def _count_session(figures: RedisFigures, ttl_ms: Any, has_meta: Any, soon: int) -> bool:
    """Count one key named like a session; True if it holds a session."""
    if isinstance(ttl_ms, ResponseError):  # PTTL works on every type: a bug
        raise ttl_ms
    if ttl_ms == -2:  # gone since the SCAN found it
        return False
    if isinstance(has_meta, ResponseError):
        _raise_unless_wrong_type(has_meta)
        figures.other_keys += 1
        return False
    if not has_meta:
        # A hybrid fence (a delete's version marker), or a hash that is not ours.
        figures.without_metadata += 1
        return False
    figures.sessions += 1
    if ttl_ms == -1:
        figures.without_ttl += 1
    elif ttl_ms < soon * 1000:
        figures.expiring_soon += 1
    return True


def _keep_top(heap: list[tuple[int, str]], size: int, entry: tuple[int, str]) -> None:
    # A bounded min-heap: memory stays O(top) however many users there are.
    if len(heap) < size:
        heapq.heappush(heap, entry)
    elif entry > heap[0]:
        heapq.heapreplace(heap, entry)


def _raise_unless_wrong_type(err: ResponseError) -> None:
    # A key of the wrong type under our names is corrupted data (counted among
    # the other keys); any other error is a bug and must surface.
    if not str(err).startswith("WRONGTYPE"):
        raise err


def _database_figures(now: int, soon: int, top: int) -> tuple[DatabaseFigures, list[UserCount]]:
    live = Q(expires_at__gt=now)
    totals = DurableSession.objects.aggregate(
        rows=Count("pk"),
        live=Count("pk", filter=live),
        signed_in=Count("pk", filter=live & Q(user_id__isnull=False)),
        expiring_soon=Count("pk", filter=live & Q(expires_at__lte=now + soon)),
    )
    queue = RedisInvalidation.objects.aggregate(pending=Count("pk"), oldest=Min("queued_at"))
    oldest = queue["oldest"]
    figures = DatabaseFigures(
        rows=totals["rows"],
        live=totals["live"],
        expired=totals["rows"] - totals["live"],
        signed_in=totals["signed_in"],
        expiring_soon=totals["expiring_soon"],
        pending_invalidations=queue["pending"],
        # queued_at is in nanoseconds (see storage/database.py).
        oldest_invalidation_age=(
            round(max(0.0, time.time() - oldest / 1e9), 1) if oldest is not None else None
        ),
    )
    top_users: list[UserCount] = []
    if top:
        rows = (
            DurableSession.objects.filter(live, user_id__isnull=False)
            .values_list("user_id")
            .annotate(sessions=Count("pk"))
            .order_by("-sessions", "user_id")[:top]
        )
        top_users = [UserCount(str(user), int(count)) for user, count in rows]
    return figures, top_users


def _breaker_figures() -> BreakerFigures:
    breaker = breaker_for(BREAKER_NAME)
    opened_at = breaker.opened_at
    # The breaker's clock is time.monotonic (see breaker.py).
    open_for = round(time.monotonic() - opened_at, 1) if opened_at is not None else None
    return BreakerFigures(state=breaker.state.value, open_for_seconds=open_for)
