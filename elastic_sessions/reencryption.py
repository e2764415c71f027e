"""Bring every stored value under the first of ``ENCRYPTION_KEYS`` (``reencrypt_sessions_elastic``).

Sessions are re-encrypted lazily when they are written; this pass does the
rest, so an old key can be removed (or, with ``None`` first, encryption turned
off) without signing anyone out.  Each rewrite is a compare-and-set: a value
that changed since it was read (a request wrote it meanwhile, sealed with the
first key already) is left alone, so the pass never loses a write.  Redis
hashes (both engines' sessions and the hybrid's copies) go in one ``SCAN`` pass
on each primary; the hybrid's database rows in batches by primary key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from .codec import ENCRYPTED_MARK
from .conf import elastic_settings
from .connection import get_client, primaries, translate_outages
from .encryption import CLEAR_FIELDS, Keyring, UnreadableValue, keyring
from .keys import storage_id_from_redis_key
from .models import DurableSessionField
from .storage.redis import hash_fields
from .storage.scripts import LuaScript, run_calls

Progress = Callable[[str], None]

# Rewrite fields only where they still hold what was read.
# KEYS[1]: a session hash
# ARGV: triples of old field name, old value, new field name; then, after them,
#       the new values in the same order (ARGV[3n+1 ..])
# Returns how many fields were rewritten.
# allow-oom: a rewrite replaces a value of about the same size.
REWRITE_IF_UNCHANGED = """#!lua flags=allow-oom
local key = KEYS[1]
local n = #ARGV / 4
local done = 0
for i = 0, n - 1 do
  local old_name, old_value, new_name = ARGV[3 * i + 1], ARGV[3 * i + 2], ARGV[3 * i + 3]
  if redis.call('HGET', key, old_name) == old_value then
    if old_name ~= new_name then redis.call('HDEL', key, old_name) end
    redis.call('HSET', key, new_name, ARGV[3 * n + i + 1])
    done = done + 1
  end
end
return done
"""
rewrite_script = LuaScript(REWRITE_IF_UNCHANGED)

# Field names of the package's own that hold no session value.
_INTERNAL = (b"\x00", b"\x04", b"\x05", b"\x06", b"\x07")


@dataclass
class ReencryptionReport:
    keys_scanned: int = 0
    redis_values: int = 0
    database_values: int = 0
    unreadable: int = 0
    skipped_changed: int = 0


def _rewritten(ring: Keyring, sid: str, name: bytes, value: bytes) -> tuple[bytes, bytes] | None:
    """The field as it should be stored now, or None if it already is (or cannot be read)."""
    if name[:1] in _INTERNAL or name in CLEAR_FIELDS:
        return None
    if name[:1] == ENCRYPTED_MARK:
        clear_name, raw, stale = ring.open(sid, name, value)
        if not stale:
            return None
    elif not ring.sealing:
        return None
    else:
        clear_name, raw = name, value
    return ring.seal(sid, clear_name, raw) if ring.sealing else (clear_name, raw)


def _plan(
    ring: Keyring, sid: str, fields: dict[bytes, bytes], report: ReencryptionReport
) -> list[tuple[bytes, bytes, bytes, bytes]]:
    changes = []
    for name, value in fields.items():
        try:
            new = _rewritten(ring, sid, name, value)
        except UnreadableValue:
            report.unreadable += 1  # no key opens it: left for the engine to drop
            continue
        if new is not None:
            changes.append((name, value, *new))
    return changes


def reencrypt_redis(
    report: ReencryptionReport, *, batch_size: int, dry_run: bool, progress: Progress
) -> None:
    ring = keyring()
    client = get_client()
    pattern = f"{elastic_settings.KEY_PREFIX}:{{*}}"
    with translate_outages("re-encrypt sessions"):
        # SCAN each primary (a cluster's keyspace is the union of theirs); reads
        # and rewrites go through the cluster-aware client, which follows a key
        # whose slot moved since SCAN found it.
        for node in primaries(client):
            for key in node.scan_iter(match=pattern, count=batch_size, _type="hash"):
                _reencrypt_key(client, ring, _text(key), report, dry_run=dry_run)
                if report.keys_scanned % 1000 == 0:
                    progress(f"redis: {report.keys_scanned} keys scanned")


def _reencrypt_key(
    client: redis.Redis, ring: Keyring, name: str, report: ReencryptionReport, *, dry_run: bool
) -> None:
    sid = storage_id_from_redis_key(name)
    report.keys_scanned += 1
    if sid is None:
        return
    changes = _plan(ring, sid, hash_fields(client.hgetall(name)), report)
    if not changes:
        return
    if dry_run:
        report.redis_values += len(changes)
        return
    args: list[Any] = [item for change in changes for item in change[:3]]
    args += [change[3] for change in changes]
    (done,) = run_calls(client, [(rewrite_script, [name], args)])
    if isinstance(done, Exception):
        raise done
    report.redis_values += int(done)
    report.skipped_changed += len(changes) - int(done)


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def reencrypt_database(
    report: ReencryptionReport, *, batch_size: int, dry_run: bool, progress: Progress
) -> None:
    ring = keyring()
    last = 0
    while True:
        rows = list(
            DurableSessionField.objects.filter(pk__gt=last)
            .order_by("pk")
            .values_list("pk", "session_id", "name", "value")[:batch_size]
        )
        if not rows:
            return
        for pk, sid, name, value in rows:
            old_name, old_value = bytes(name), bytes(value)
            try:
                new = _rewritten(ring, sid, old_name, old_value)
            except UnreadableValue:
                report.unreadable += 1
                continue
            if new is None:
                continue
            if dry_run:
                report.database_values += 1
                continue
            # Compare-and-set: a row a request rewrote since is left alone.
            updated = DurableSessionField.objects.filter(pk=pk, value=old_value).update(
                name=new[0], value=new[1]
            )
            report.database_values += updated
            report.skipped_changed += 1 - updated
        last = rows[-1][0]
        progress(f"database: {report.database_values} values rewritten")
