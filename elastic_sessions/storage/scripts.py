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

# Load a session and slide its idle expiry, in one round trip.
# KEYS[1]: the session hash
# ARGV[1]: touch interval, ms: extend the TTL only when it would grow by more
# Returns: nil if the key is missing; {-1} if it is not a hash;
#          else {pttl_ms, touched (0|1), field1, value1, field2, value2, ...}
# allow-oom: reads and TTL updates must keep working when Redis is full.
LOAD = """#!lua flags=allow-oom
local key = KEYS[1]
local kind = redis.call('TYPE', key)['ok']
if kind == 'none' then return nil end
if kind ~= 'hash' then return {-1} end
local fields = redis.call('HGETALL', key)
local ttl = redis.call('PTTL', key)
local touched = 0
local meta = redis.call('HGET', key, '\\0')
if meta then
  local deadline, idle = string.match(meta, '^%d+,(%d+),(%d+)$')
  if idle and tonumber(idle) > 0 then
    local t = redis.call('TIME')
    local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local target = math.min(tonumber(idle) * 1000, tonumber(deadline) * 1000 - now_ms)
    if target > 0 and target - ttl > tonumber(ARGV[1]) then
      redis.call('PEXPIRE', key, target)
      ttl = target
      touched = 1
    end
  end
end
table.insert(fields, 1, touched)
table.insert(fields, 1, ttl)
return fields
"""

# Write the changed fields of a session, atomically refusing to resurrect it.
# KEYS[1]: the session hash
# ARGV[1]: 'c' to create (fails if the key exists) or 'u' to update (fails if missing)
# ARGV[2]: idle timeout, seconds; 0 for a fixed expiry that never slides
# ARGV[3]: absolute timeout, seconds (starts when the session is created)
# ARGV[4]: fixed expiry, epoch seconds; 0 for none
# ARGV[5]: n, the number of fields to set
# ARGV[6 .. 5+2n]: field, value pairs to set; the key's other encoding is removed
# ARGV[6+2n ..]: fields to remove
# Returns {status, meta}: status 1 written, 0 exists (create), -1 missing (update),
#         -2 already expired, so deleted; meta is "created,deadline,idle".
# No allow-oom: under maxmemory the whole write is refused before it starts, never
# half applied.
SAVE = (
    "#!lua\n"
    + _CHUNKED_CALL
    + """
local key = KEYS[1]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exists = redis.call('EXISTS', key) == 1
local old_meta = false
if ARGV[1] == 'c' then
  if exists then return {0, ''} end
else
  if not exists then return {-1, ''} end
  old_meta = redis.call('HGET', key, '\\0')
end
local created, deadline
if old_meta then created, deadline = string.match(old_meta, '^(%d+),(%d+),') end
if created then
  created = tonumber(created)
  deadline = tonumber(deadline)
else
  created = tonumber(t[1])
  deadline = created + tonumber(ARGV[3])
end
local idle = tonumber(ARGV[2])
local expires = deadline
local fixed = tonumber(ARGV[4])
if fixed > 0 and fixed < expires then expires = fixed end
local ttl = expires * 1000 - now_ms
if idle > 0 and idle * 1000 < ttl then ttl = idle * 1000 end
if ttl <= 0 then
  redis.call('DEL', key)
  return {-2, ''}
end
local meta = string.format('%d,%d,%d', created, deadline, idle)
if meta ~= old_meta then redis.call('HSET', key, '\\0', meta) end
local n = tonumber(ARGV[5])
local last_set = 5 + 2 * n
local stale = {}
for i = 6, last_set, 2 do
  local field = ARGV[i]
  local mark = string.byte(field, 1)
  if mark == 1 then
    local name = string.sub(field, 2)
    local first = string.byte(name, 1)
    if first and first <= 2 then stale[#stale + 1] = '\\2' .. name
    else stale[#stale + 1] = name end
  elseif mark == 2 then
    stale[#stale + 1] = '\\1' .. string.sub(field, 2)
  else
    stale[#stale + 1] = '\\1' .. field
  end
end
for i = last_set + 1, #ARGV do stale[#stale + 1] = ARGV[i] end
if #stale > 0 then call_chunked('HDEL', key, stale, 1, #stale) end
if n > 0 then call_chunked('HSET', key, ARGV, 6, last_set) end
redis.call('PEXPIRE', key, ttl)
return {1, meta}
"""
)

# Delete a session and report its owner, so the caller can fix the user index.
# KEYS[1]: the session hash
# ARGV[1], ARGV[2]: the two field names the owner (user id) can be stored under
# Returns {deleted (0|1), owner field, owner value} (owner parts false when absent).
DELETE = """#!lua flags=allow-oom
local key = KEYS[1]
local field, value = false, false
if redis.call('TYPE', key)['ok'] == 'hash' then
  for i = 1, 2 do
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


def run_pipeline(client: redis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run several script calls in one round trip (no MULTI: keys may be in any slot)."""
    if len(calls) == 1:
        script, keys, args = calls[0]
        return [script(client, keys, args)]
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        results = pipe.execute(raise_on_error=False)
        missing = [
            call for call, res in zip(calls, results, strict=True) if isinstance(res, NoScriptError)
        ]
        if not missing or attempt:
            break
        # Every script here is idempotent for a retry: load and run again.
        for script, _, _ in missing:
            client.script_load(script.source)
    return _raise_first_error(results)


async def arun_pipeline(client: redis.asyncio.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    if len(calls) == 1:
        script, keys, args = calls[0]
        return [await script.acall(client, keys, args)]
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        results = await pipe.execute(raise_on_error=False)
        missing = [
            call for call, res in zip(calls, results, strict=True) if isinstance(res, NoScriptError)
        ]
        if not missing or attempt:
            break
        for script, _, _ in missing:
            await client.script_load(script.source)
    return _raise_first_error(results)


def _raise_first_error(results: list[Any]) -> list[Any]:
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


load_script = LuaScript(LOAD)
save_script = LuaScript(SAVE)
delete_script = LuaScript(DELETE)
delete_if_owned_script = LuaScript(DELETE_IF_OWNED)
index_update_script = LuaScript(INDEX_UPDATE)
