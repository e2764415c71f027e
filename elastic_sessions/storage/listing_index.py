"""Two sorted sets of every session of the Redis engine, for the admin list.

``<prefix>:ix:seen`` scores each storage id by when it was last seen and
``<prefix>:ix:exp`` by when it expires (epoch seconds).  They are kept up to
date by the commands a save, a touch or a delete already sends, as
fire-and-forget sends after it (no round trip of their own, and an error there
never fails a request), so they can lag: an entry may outlive its session
(an idle expiry, an eviction, a touch that raced a delete).  Readers check each
listed session and prune what is gone; ``clearsessions_elastic`` prunes the
entries of expired sessions in bulk.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis

from ..conf import elastic_settings
from ..keys import StorageId, listing_redis_keys
from .scripts import LuaScript
from .wire import execute, first_error

# Ranks of a score range, then that page of it: one round trip, bounded work
# (O(log n + page)), whatever the offset; LIMIT offsets walk the skiplist.
# KEYS[1]: one of the listing sorted sets
# ARGV[1], ARGV[2]: min and max score ('-inf' / '+inf' allowed; both inclusive)
# ARGV[3]: offset within the range; ARGV[4]: how many
# ARGV[5]: '1' for highest scores first
# Returns {members in the range, member, score, member, score, ...}.
RANGE_PAGE = """
local key, min, max = KEYS[1], ARGV[1], ARGV[2]
local offset, count = tonumber(ARGV[3]), tonumber(ARGV[4])
local total = redis.call('ZCOUNT', key, min, max)
if offset >= total or count <= 0 then return {total, {}} end
local last = math.min(offset + count, total) - 1
local first
if ARGV[5] == '1' then
  first = 0
  if max ~= '+inf' then first = redis.call('ZCOUNT', key, '(' .. max, '+inf') end
  return {total, redis.call('ZREVRANGE', key, first + offset, first + last, 'WITHSCORES')}
end
first = 0
if min ~= '-inf' then first = redis.call('ZCOUNT', key, '-inf', '(' .. min) end
return {total, redis.call('ZRANGE', key, first + offset, first + last, 'WITHSCORES')}
"""
range_page_script = LuaScript(RANGE_PAGE)

# Entries of sessions that expired, removed per call at most (page views and GC).
PRUNE_BATCH = 500


def seen_commands(sid: StorageId, now: int, expires_at: int | None) -> list[tuple[Any, ...]]:
    """Record that ``sid`` was seen at ``now`` and, if known, when it expires now
    (nothing when ``LISTING_INDEX`` is off)."""
    if not elastic_settings.LISTING_INDEX:
        return []
    seen, expiry = listing_redis_keys()
    commands: list[tuple[Any, ...]] = [("ZADD", seen, now, sid)]
    if expires_at is not None:
        commands.append(("ZADD", expiry, expires_at, sid))
    return commands


def forget_commands(sids: Sequence[StorageId]) -> list[tuple[Any, ...]]:
    """Take ``sids`` out of both sets (their sessions were deleted)."""
    if not sids:
        return []
    return [("ZREM", key, *sids) for key in listing_redis_keys()]


def expired_query(now: int) -> tuple[Any, ...]:
    """The ids of up to PRUNE_BATCH sessions whose expiry has passed."""
    _, expiry = listing_redis_keys()
    return ("ZRANGEBYSCORE", expiry, "-inf", now, "LIMIT", 0, PRUNE_BATCH)


def decode_members(raw: Sequence[Any]) -> list[StorageId]:
    return [StorageId(item.decode("ascii") if isinstance(item, bytes) else item) for item in raw]


def prune_listing(client: redis.Redis, *, dry_run: bool, batches: int | None = None) -> int:
    """Drop the entries of expired sessions from both sets; returns how many.

    ``batches`` caps the work at that many rounds of PRUNE_BATCH (a page view
    prunes one round; the GC all of them).
    """
    pruned, rounds = 0, 0
    while batches is None or rounds < batches:
        rounds += 1
        sids = decode_members(first_error(execute(client, [expired_query(int(time.time()))]))[0])
        if dry_run:
            return len(sids)  # a dry run cannot page past entries it keeps
        if sids:
            first_error(execute(client, forget_commands(sids)))
        pruned += len(sids)
        if len(sids) < PRUNE_BATCH:
            break
    return pruned
