"""The Lua scripts of the Redis layout, and how to call them by SHA.

Each script touches one key only, so every one of them is valid on Redis Cluster.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import NoScriptError

from ..connection import is_cluster
from .wire import Command, aexecute, execute, first_error

# Redis' Lua caps unpack() near 8000 values; write in slices well below it.
_CHUNKED_CALL = """
local function call_chunked(command, key, list, first, last)
  local step = 1000
  for i = first, last, step do
    local j = math.min(i + step - 1, last)
    redis.call(command, key, unpack(list, i, j))
  end
end
"""

# Metadata is 12 bytes: created, absolute deadline (epoch seconds) and idle
# timeout (seconds; 0 for a fixed expiry), big-endian unsigned 32-bit each.
# Binary rather than text keeps a small session in the compact listpack
# encoding and under the size of the same data as one JSON string.
_META = """
local META_FORMAT = '>I4I4I4'
local function read_meta(raw)
  if type(raw) ~= 'string' or #raw ~= 12 then return nil end
  local created, deadline, idle = struct.unpack(META_FORMAT, raw)
  return created, deadline, idle
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Slide a session's idle expiry; sent in the same round trip as its HGETALL.
# KEYS[1]: the session hash
# ARGV[1]: touch interval, ms: extend only when the TTL would grow by more than
#          this, or by more than half the idle timeout, whichever is smaller
# ARGV[2]: the request's client field (\7, see client.py) to store, or ''
# Returns the new TTL in ms, or -1 when nothing was extended (missing key, not a
# hash, fixed expiry, recently touched, deadline reached).
# allow-oom: an expiry update must keep working when Redis is full (the client
# field replaces one of the same bounded size).
TOUCH = (
    "#!lua flags=allow-oom\n"
    + _META
    + """
local key = KEYS[1]
local _, deadline, idle = read_meta(redis.pcall('HGET', key, '\\0'))
if not deadline then return -1 end
if ARGV[2] and #ARGV[2] > 0 then redis.call('HSET', key, '\\7', ARGV[2]) end
if idle == 0 then return -1 end
local target = math.min(idle * 1000, deadline * 1000 - now_ms())
local throttle = math.min(tonumber(ARGV[1]), idle * 500)
if target > 0 and target - redis.call('PTTL', key) > throttle then
  redis.call('PEXPIRE', key, target)
  return target
end
return -1
"""
)

# Write the changed fields of a session, atomically refusing to resurrect it.
# KEYS[1]: the session hash
# ARGV[1]: 'c' to create (fails if the key exists) or 'u' to update (fails if missing)
# ARGV[2]: idle timeout, seconds; 0 for a fixed expiry that never slides
# ARGV[3]: absolute timeout, seconds (starts when the session is created)
# ARGV[4]: fixed expiry, epoch seconds; 0 for none
# ARGV[5]: metadata to carry over on create (cycle_key keeps created and the
#          deadline of the session it replaces), or ''
# ARGV[6]: deadline cap, epoch seconds; 0 for none: the absolute deadline is
#          lowered to it, never raised (the staff timeout; see policies.py)
# ARGV[7]: n, the number of fields to set
# ARGV[8 .. 7+2n]: field, value pairs to set
# ARGV[8+2n ..]: fields to remove: those of removed keys, and the other field
#                names of each key set (a key is stored under one name at a
#                time; see codec.py), so two writers never leave two versions
# Returns {status, meta}: status 1 written, 0 exists (create), -1 missing (update),
#         -2 already expired, so deleted; meta is the session's metadata.
# No allow-oom: under maxmemory the whole write is refused before it starts, never
# half applied.  Kept short: it runs on every save.
SAVE = (
    "#!lua\n"
    + _CHUNKED_CALL
    + """
local key = KEYS[1]
local old_meta = false
if ARGV[1] == 'c' then
  if redis.call('EXISTS', key) == 1 then return {0, ''} end
  if #ARGV[5] == 12 then old_meta = ARGV[5] end
else
  -- Every session has its metadata field: no field, no session.
  old_meta = redis.call('HGET', key, '\\0')
  if not old_meta then return {-1, ''} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local created, deadline
if old_meta and #old_meta == 12 then
  created, deadline = struct.unpack('>I4I4', old_meta)
else
  created = math.floor(now / 1000)
  deadline = created + tonumber(ARGV[3])
end
local cap = tonumber(ARGV[6])
if cap > 0 and cap < deadline then deadline = cap end
-- The metadata holds unsigned 32-bit seconds: later than 2106 means "never".
local idle = math.min(tonumber(ARGV[2]), 4294967295)
deadline = math.min(deadline, 4294967295)
local expires = deadline
local fixed = tonumber(ARGV[4])
if fixed > 0 and fixed < expires then expires = fixed end
local ttl = expires * 1000 - now
if idle > 0 and idle * 1000 < ttl then ttl = idle * 1000 end
if ttl <= 0 then
  redis.call('DEL', key)
  return {-2, ''}
end
local meta = struct.pack('>I4I4I4', created, deadline, idle)
if meta ~= old_meta or ARGV[1] == 'c' then redis.call('HSET', key, '\\0', meta) end
local last_set = 7 + 2 * tonumber(ARGV[7])
if #ARGV > last_set then call_chunked('HDEL', key, ARGV, last_set + 1, #ARGV) end
if last_set > 7 then call_chunked('HSET', key, ARGV, 8, last_set) end
redis.call('PEXPIRE', key, ttl)
return {1, meta}
"""
)

# -- the hybrid engine's Redis copy -------------------------------------------
# A copy carries the database version it mirrors in field \4.  A hash holding
# only \4 is a *fence*: written where a copy is missing or out of step, it stops
# any snapshot older than its version from being put back (a load that read the
# database before a concurrent write), and loads treat it as a miss.

# Mirror one durable write.
# KEYS[1]: the session hash
# ARGV[1]: 'c' (the write created the session) or 'u'
# ARGV[2]: the version the database gave this write
# ARGV[3]: the session's expiry, epoch ms (the database's, so both stores agree)
# ARGV[4]: the metadata (12 bytes)
# ARGV[5]: fence lifetime, ms
# ARGV[6]: n, the number of fields to set; ARGV[7 .. 6+2n]: field, value pairs
# ARGV[7+2n ..]: fields to remove
# Returns 1 applied, 0 a newer copy or fence is there already, -1 the copy was
# missing or out of step and is now a fence (the next load reads through).
HYBRID_SAVE = (
    "#!lua\n"
    + _CHUNKED_CALL
    + """
local key = KEYS[1]
local version = tonumber(ARGV[2])
local found = redis.pcall('HGET', key, '\\4')
-- Not a hash (corrupted data): drop it, as a copy out of step.
if type(found) == 'table' then redis.call('DEL', key) found = false end
local stored = tonumber(found or '0') or 0
if stored >= version then return 0 end
local has_meta = redis.call('HEXISTS', key, '\\0') == 1
local last_set = 6 + 2 * tonumber(ARGV[6])
if ARGV[1] == 'c' or (has_meta and stored == version - 1) then
  if ARGV[1] == 'c' then redis.call('DEL', key) end
  if #ARGV > last_set then call_chunked('HDEL', key, ARGV, last_set + 1, #ARGV) end
  if last_set > 6 then call_chunked('HSET', key, ARGV, 7, last_set) end
  redis.call('HSET', key, '\\0', ARGV[4], '\\4', version)
  redis.call('HDEL', key, '\\6')
  redis.call('PEXPIREAT', key, ARGV[3])
  return 1
end
redis.call('DEL', key)
redis.call('HSET', key, '\\4', version)
redis.call('PEXPIRE', key, ARGV[5])
return -1
"""
)

# Put a database snapshot into Redis after a miss, unless something at least as
# new is there.
# KEYS[1]: the session hash
# ARGV[1]: the snapshot's version; ARGV[2]: its expiry, epoch ms; ARGV[3]: metadata
# ARGV[4]: how old (ms) a save's pending mark must be to count as abandoned
# ARGV[5 ..]: field, value pairs
# Returns the pending mark it left on the copy (epoch ms), or 0 when refused (a
# copy of this version or newer, or a newer fence).  The copy is written marked
# pending: loads keep reading the database until the caller has checked that
# the snapshot is still the latest version and confirmed it (CONFIRM_COPY).
REPOPULATE = (
    "#!lua\n"
    + _CHUNKED_CALL
    + """
local key = KEYS[1]
local version = tonumber(ARGV[1])
if redis.call('TYPE', key)['ok'] ~= 'hash' then redis.call('DEL', key) end
local stored = redis.call('HGET', key, '\\4')
if stored then
  local is_copy = redis.call('HEXISTS', key, '\\0') == 1
  local seen = tonumber(stored) or 0
  if seen > version then return 0 end
  if is_copy and seen == version then
    -- The database confirms this copy.  A pending mark (see MARK_PENDING) goes
    -- only once abandoned: a younger one may belong to a save about to commit.
    local mark = tonumber(redis.call('HGET', key, '\\6') or '')
    if mark then
      local t = redis.call('TIME')
      local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      if now - mark > tonumber(ARGV[4]) then redis.call('HDEL', key, '\\6') end
    end
    return 0
  end
end
redis.call('DEL', key)
if #ARGV >= 5 then call_chunked('HSET', key, ARGV, 5, #ARGV) end
local t = redis.call('TIME')
local mark = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', key, '\\0', ARGV[3], '\\4', version, '\\6', mark)
redis.call('PEXPIREAT', key, ARGV[2])
return mark
"""
)

# Clear the pending mark REPOPULATE left, if it is still that one.
# KEYS[1]: the session hash; ARGV[1]: the mark REPOPULATE returned
CONFIRM_COPY = """
if redis.call('HGET', KEYS[1], '\\6') == ARGV[1] then redis.call('HDEL', KEYS[1], '\\6') end
return 1
"""

# Mark a copy as about to change: sent (without waiting) before a save's
# database transaction, cleared by the save's HYBRID_SAVE.  Loads read the
# database while it is there, so a worker killed between its commit and its
# Redis write leaves no stale copy behind; a load's REPOPULATE of the same
# version clears a mark once it is old enough to be abandoned (its save was
# cut off before committing, and the copy is current).
# KEYS[1]: the session hash; ARGV[1]: the time, epoch ms
MARK_PENDING = """
if redis.call('HEXISTS', KEYS[1], '\\0') == 1 then redis.call('HSET', KEYS[1], '\\6', ARGV[1]) end
return 1
"""

# Replace a session's copy by a fence no snapshot can pass (the session was
# deleted): a load that read the database just before the delete cannot put
# the session back.
# KEYS[1]: the session hash; ARGV[1]: fence lifetime, ms
FENCE_DELETED = """#!lua flags=allow-oom
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '\\4', '9007199254740991')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# Delete a session and report its owner, so the caller can fix the user index.
# KEYS[1]: the session hash
# ARGV: the field names the owner (user id) can be stored under
# Returns {deleted (0|1), owner field, owner value} (owner parts false when absent).
DELETE = """#!lua flags=allow-oom
local key = KEYS[1]
local field, value = false, false
if redis.call('TYPE', key)['ok'] == 'hash' then
  for i = 1, #ARGV do
    local found = redis.call('HGET', key, ARGV[i])
    if found then field, value = ARGV[i], found end
  end
end
return {redis.call('DEL', key), field, value}
"""

# Delete a session only if it belongs to the given user (a revoke that cannot be
# pointed at somebody else's session).
# KEYS[1]: the session hash
# ARGV[1]: the owner field name, ARGV[2]: the owner value it must hold
# Returns 1 if deleted, 0 otherwise.
DELETE_IF_OWNED = """#!lua flags=allow-oom
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
return redis.call('DEL', KEYS[1])
"""

# Keep a user's index: add and remove storage ids, prune entries past their
# deadline, and expire the index itself with its last session.
# KEYS[1]: the user's index, a sorted set of storage ids scored by deadline
# ARGV[1]: storage id to add, or ''
# ARGV[2]: its absolute deadline, epoch seconds
# ARGV[3 ..]: storage ids to remove
# Returns the number of entries left.
INDEX_UPDATE = """#!lua flags=allow-oom
local key = KEYS[1]
local kind = redis.call('TYPE', key)['ok']
-- Something else under an index name (corrupted data) must not fail logins
-- and logouts: the index is rebuilt from here on.
if kind ~= 'zset' and kind ~= 'none' then redis.call('DEL', key) end
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if ARGV[1] ~= '' then redis.call('ZADD', key, tonumber(ARGV[2]), ARGV[1]) end
for i = 3, #ARGV do redis.call('ZREM', key, ARGV[i]) end
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if #last == 0 then
  redis.call('DEL', key)
  return 0
end
redis.call('EXPIREAT', key, math.ceil(tonumber(last[2])))
return redis.call('ZCARD', key)
"""


class LuaScript:
    """A script called by SHA, loaded on the first NOSCRIPT (e.g. after a restart)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, client: redis.Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    async def acall(
        self, client: redis.asyncio.Redis, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


ScriptCall = tuple[LuaScript, Sequence[str], Sequence[Any]]
# A call is a script call or a plain command such as ("HGETALL", key).
Call = ScriptCall | tuple[Any, ...]


def _command(call: Call, cluster: bool = False) -> Command:
    if isinstance(call[0], LuaScript):
        script, keys, args = call
        if cluster:
            # EVAL with the source: each node caches it by SHA, and no NOSCRIPT
            # reload has to find the node a pipelined call went to.
            return ("EVAL", script.source, len(keys), *keys, *args)
        return ("EVALSHA", script.sha, len(keys), *keys, *args)
    return call


def _scripts_to_reload(replies: list[Any]) -> list[int]:
    return [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]


def _reload_commands(calls: Sequence[Call], missing: list[int]) -> list[Command]:
    # After a restart or SCRIPT FLUSH the cache is empty: load what is missing and
    # run those calls again (a call refused with NOSCRIPT did nothing).
    sources = {calls[i][0].source for i in missing}
    return [("SCRIPT", "LOAD", source) for source in sorted(sources)] + [
        _command(calls[i]) for i in missing
    ]


def _merge_retry(replies: list[Any], missing: list[int], retried: list[Any]) -> list[Any]:
    for i, reply in zip(missing, retried[len(retried) - len(missing) :], strict=True):
        replies[i] = reply
    return replies


def run_calls(client: redis.Redis, calls: Sequence[Call]) -> list[Any]:
    """The replies of ``calls``, sent in one round trip; errors left in their slots."""
    cluster = is_cluster(client)
    replies = execute(client, [_command(call, cluster) for call in calls])
    missing = _scripts_to_reload(replies)
    if missing:
        retried = execute(client, _reload_commands(calls, missing))
        replies = _merge_retry(replies, missing, retried)
    return replies


async def arun_calls(client: redis.asyncio.Redis, calls: Sequence[Call]) -> list[Any]:
    cluster = is_cluster(client)
    replies = await aexecute(client, [_command(call, cluster) for call in calls])
    missing = _scripts_to_reload(replies)
    if missing:
        retried = await aexecute(client, _reload_commands(calls, missing))
        replies = _merge_retry(replies, missing, retried)
    return replies


def run_pipeline(client: redis.Redis, calls: Sequence[Call]) -> list[Any]:
    """Like :func:`run_calls`, raising the first error instead."""
    return first_error(run_calls(client, calls))


async def arun_pipeline(client: redis.asyncio.Redis, calls: Sequence[Call]) -> list[Any]:
    return first_error(await arun_calls(client, calls))


save_script = LuaScript(SAVE)
delete_script = LuaScript(DELETE)
delete_if_owned_script = LuaScript(DELETE_IF_OWNED)
index_update_script = LuaScript(INDEX_UPDATE)
hybrid_save_script = LuaScript(HYBRID_SAVE)
repopulate_script = LuaScript(REPOPULATE)
fence_deleted_script = LuaScript(FENCE_DELETED)
