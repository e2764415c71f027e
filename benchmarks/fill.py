"""A million signed-in sessions of the Redis engine, written by redis-server itself.

Saving them through the engine would take minutes; a Lua script writes the same
layout (hash with metadata, client and auth fields, TTL, per-user index, the two
listing sets) at some fifty thousand sessions a second.  The field names
and constant values come from the real codec and client helpers, so only the
storage id and the times vary.  Shared by ``benchmarks.listing`` and
``tests/test_listing_scale.py``; Django must be configured first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

from elastic_sessions.client import RequestClient
from elastic_sessions.conf import elastic_settings
from elastic_sessions.keys import StorageId, listing_redis_keys, user_index_redis_key
from elastic_sessions.rows import session_codec

# Last seen of session n: now - (n * STEP) % SPAN.  STEP is a prime that does
# not divide SPAN, so below SPAN sessions no two share a score and the orders
# by last seen and by storage id differ.  SPAN stays a quarter of an hour under
# the idle timeout: no session expires while a test or benchmark reads them,
# and some expire within the hour.
STEP = 7919
SPAN_MARGIN = 900
SESSIONS_PER_USER = 5
CHUNK = 50_000
USER_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
IP = "203.0.113.7"
BACKEND = "django.contrib.auth.backends.ModelBackend"
AUTH_HASH = "9f" * 32

# Write sessions first .. first+count-1 (keys are not declared: a single server
# only, never a Cluster).
# ARGV[1]: session key prefix; ARGV[2], ARGV[3]: the last-seen and expiry sets
# ARGV[4]: first session number; ARGV[5]: how many
# ARGV[6]: now; ARGV[7]: SPAN; ARGV[8]: STEP; ARGV[9]: idle timeout;
# ARGV[10]: absolute timeout (seconds)
# ARGV[11]: the client field after its 4-byte last-seen time
# ARGV[12]: the user id field name; ARGV[13]: sessions per user
# ARGV[14]: number of the first user in this chunk; ARGV[15]: k
# ARGV[16 .. 15+2k]: constant field, value pairs
# ARGV[16+2k ..]: the users' index keys, from user ARGV[14] on
# Returns the number of sessions written.
FILL = """
local prefix, seen_set, expiry_set = ARGV[1], ARGV[2], ARGV[3]
local first, count = tonumber(ARGV[4]), tonumber(ARGV[5])
local now, span, step = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local idle, absolute = tonumber(ARGV[9]), tonumber(ARGV[10])
local client_tail, owner_field = ARGV[11], ARGV[12]
local per_user = tonumber(ARGV[13])
local first_user, npairs = tonumber(ARGV[14]), tonumber(ARGV[15])
local constants = {}
for i = 16, 15 + 2 * npairs do constants[#constants + 1] = ARGV[i] end
local user_keys = 16 + 2 * npairs
local owner, latest = -1, 0
local seen_batch, expiry_batch = {}, {}
for n = first, first + count - 1 do
  local sid = string.format('%022d', n)
  local key = prefix .. ':{' .. sid .. '}'
  local seen = now - (n * step) % span
  local created = seen - n % 3600
  local deadline = created + absolute
  local expires = math.min(seen + idle, deadline)
  local user = math.floor(n / per_user) + 1
  redis.call('HSET', key, '\\0', struct.pack('>I4I4I4', created, deadline, idle),
    '\\7', struct.pack('>I4', seen) .. client_tail, owner_field, tostring(user),
    unpack(constants))
  redis.call('EXPIREAT', key, expires)
  local index = ARGV[user_keys + user - first_user]
  redis.call('ZADD', index, deadline, sid)
  -- The index expires with its last session (its sessions are consecutive).
  if user ~= owner then owner, latest = user, deadline end
  latest = math.max(latest, deadline)
  if n % per_user == per_user - 1 or n == first + count - 1 then
    redis.call('EXPIREAT', index, latest)
  end
  seen_batch[#seen_batch + 1] = seen
  seen_batch[#seen_batch + 1] = sid
  expiry_batch[#expiry_batch + 1] = expires
  expiry_batch[#expiry_batch + 1] = sid
  -- Many members per ZADD (unpack() tops out near 8000 values).
  if #seen_batch >= 2000 or n == first + count - 1 then
    redis.call('ZADD', seen_set, unpack(seen_batch))
    redis.call('ZADD', expiry_set, unpack(expiry_batch))
    seen_batch, expiry_batch = {}, {}
  end
end
return count
"""


def storage_id(n: int) -> StorageId:
    """Session n's storage id: its number in 22 digits (a valid base64url id)."""
    return StorageId(f"{n:022d}")


@dataclass(frozen=True, slots=True)
class Population:
    """What ``fill`` wrote: session n's id, owner and times, as the script computed them."""

    size: int
    now: int
    idle: int
    absolute: int

    @property
    def span(self) -> int:
        return self.idle - SPAN_MARGIN

    def last_seen(self, n: int) -> int:
        return self.now - (n * STEP) % self.span

    def expires(self, n: int) -> int:
        created = self.last_seen(n) - n % 3600
        return min(self.last_seen(n) + self.idle, created + self.absolute)

    def owner(self, n: int) -> str:
        return str(n // SESSIONS_PER_USER + 1)

    def sessions_of(self, user_id: str) -> list[int]:
        first = (int(user_id) - 1) * SESSIONS_PER_USER
        return [n for n in range(first, first + SESSIONS_PER_USER) if n < self.size]


def fill(client: redis.Redis, size: int, *, now: int) -> Population:
    """Write sessions 0 .. ``size`` - 1, last seen before ``now`` (epoch seconds), each
    owned by user n // SESSIONS_PER_USER + 1."""
    population = Population(
        size, now, settings.SESSION_COOKIE_AGE, elastic_settings.ABSOLUTE_TIMEOUT
    )
    if population.span < size or math.gcd(STEP, population.span) != 1:
        raise ValueError(
            f"With SESSION_COOKIE_AGE={population.idle}, {size:,} sessions cannot have distinct "
            f"last-seen times: it must exceed {size + SPAN_MARGIN}, and it minus {SPAN_MARGIN} "
            f"must not be a multiple of {STEP}."
        )
    codec = session_codec()
    owner_field, _ = codec.encode_item(SESSION_KEY, "1")
    constants = [
        *codec.encode_item(BACKEND_SESSION_KEY, BACKEND),
        *codec.encode_item(HASH_SESSION_KEY, AUTH_HASH),
    ]
    client_tail = RequestClient(IP, USER_AGENT).stamp(now)[4:]
    seen_set, expiry_set = listing_redis_keys()
    for first in range(0, size, CHUNK):
        count = min(CHUNK, size - first)
        first_user = first // SESSIONS_PER_USER + 1
        last_user = (first + count - 1) // SESSIONS_PER_USER + 1
        index_keys = [user_index_redis_key(user) for user in range(first_user, last_user + 1)]
        client.eval(
            FILL,
            0,
            elastic_settings.KEY_PREFIX,
            seen_set,
            expiry_set,
            first,
            count,
            now,
            population.span,
            STEP,
            population.idle,
            population.absolute,
            client_tail,
            owner_field,
            SESSIONS_PER_USER,
            first_user,
            len(constants) // 2,
            *constants,
            *index_keys,
        )
    return population
