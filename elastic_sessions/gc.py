"""Garbage collection: what neither Redis nor a request removes by itself.

* Database rows of ended sessions (the hybrid engine's durable copies), deleted
  in batches of ``batch_size`` sessions, one short transaction each: memory and
  lock time stay bounded however many rows have piled up (Django's
  ``clearsessions`` deletes them all in one statement).
* Under the key prefix, in one resumable ``SCAN`` pass: user-index entries of
  sessions that ended, and keys that are not ours or not of the right type
  (orphaned or malformed).  Redis expires sessions itself.

Every step is idempotent, so several hosts may run it at once: they at worst
repeat each other's work.  ``deadline`` (a ``time.monotonic()`` value) stops the
work between batches (after at least one, so every run makes progress); the
next run resumes where this one stopped (database rows are still there to be
found; the SCAN cursor is kept in Redis).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from django.db import connection

from .conf import elastic_settings
from .connection import get_client, translate_outages
from .keys import is_valid_storage_id, listing_redis_keys
from .models import DurableSession
from .storage.database import delete_ended
from .storage.listing_index import prune_listing
from .storage.redis import prune_index

# How long a stopped SCAN pass may be resumed; after that a run starts over.
_CURSOR_TTL = 24 * 3600

Progress = Callable[[str], None]


@dataclass
class GcReport:
    database_rows: int = 0
    database_batches: int = 0
    # The most sessions deleted in one transaction (never more than the batch size).
    largest_batch: int = 0
    keys_scanned: int = 0
    user_indexes: int = 0
    stale_index_entries: int = 0
    malformed_keys: int = 0
    finished: bool = True


def durable_tables_exist() -> bool:
    """Whether the hybrid engine's tables were migrated in this database."""
    return DurableSession._meta.db_table in connection.introspection.table_names()


def purge_database(
    report: GcReport, *, batch_size: int, dry_run: bool, deadline: float, progress: Progress
) -> None:
    """Delete ended sessions' rows in bounded batches (see the module docstring)."""
    now = int(time.time())
    ended = DurableSession.objects.filter(expires_at__lte=now)
    if dry_run:
        report.database_rows = ended.count()
        return
    while True:
        # The index on expires_at finds a batch without scanning the table.
        ids = list(ended.values_list("pk", flat=True)[:batch_size])
        if not ids:
            return
        if report.database_batches and time.monotonic() >= deadline:
            # At least one batch per run, so that every run makes progress.
            report.finished = False
            return
        deleted = delete_ended(ids, now)
        report.database_rows += deleted
        report.database_batches += 1
        report.largest_batch = max(report.largest_batch, len(ids))
        progress(f"database: {report.database_rows} ended sessions deleted")


def scan_keys(
    report: GcReport, *, batch_size: int, dry_run: bool, deadline: float, progress: Progress
) -> None:
    """One SCAN pass under the prefix, resumed from the cursor a stopped run kept."""
    client = get_client()
    prefix = elastic_settings.KEY_PREFIX
    cursor_key = f"{prefix}:gc:cursor"
    with translate_outages("scan the session keys"):
        cursor = int(client.get(cursor_key) or 0)
        while True:
            cursor, raw_keys = client.scan(cursor, match=f"{prefix}:*", count=batch_size)
            keys = [_text(raw) for raw in raw_keys if _text(raw) != cursor_key]
            # The types of a whole page in one round trip, not one per key.
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.type(key)
            for key, kind in zip(keys, pipe.execute(), strict=True):
                _check_key(client, key, _text(kind), prefix=prefix, report=report, dry_run=dry_run)
            report.keys_scanned += len(keys)
            progress(f"redis: {report.keys_scanned} keys scanned")
            if cursor == 0:
                client.delete(cursor_key)
                return
            if time.monotonic() >= deadline:
                client.set(cursor_key, cursor, ex=_CURSOR_TTL)
                report.finished = False
                return


def _text(raw: object) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _check_key(
    client: redis.Redis, key: str, kind: str, *, prefix: str, report: GcReport, dry_run: bool
) -> None:
    if kind == "none":
        return  # expired meanwhile
    if key in listing_redis_keys() and not elastic_settings.LISTING_INDEX:
        # Left from before LISTING_INDEX was turned off: nothing keeps it now.
        report.malformed_keys += 1
        if not dry_run:
            client.delete(key)
        return
    if key in listing_redis_keys() and kind == "zset":
        if key == listing_redis_keys()[1]:  # pruned once per pass, by expiry
            report.stale_index_entries += prune_listing(client, dry_run=dry_run)
        return
    index_id = _braced(key, f"{prefix}:u:")
    session_id = _braced(key, f"{prefix}:")
    if index_id is not None and is_valid_storage_id(index_id) and kind == "zset":
        report.user_indexes += 1
        report.stale_index_entries += prune_index(client, key, dry_run=dry_run)
        return
    if session_id is not None and is_valid_storage_id(session_id) and kind == "hash":
        return  # a session (or a hybrid fence): Redis expires it
    # Not a key this package writes, or of the wrong type: orphaned or malformed.
    report.malformed_keys += 1
    if not dry_run:
        client.delete(key)


def _braced(key: str, start: str) -> str | None:
    """The text inside ``start{...}`` when ``key`` is exactly that, else None."""
    if key.startswith(start + "{") and key.endswith("}"):
        inner = key[len(start) + 1 : -1]
        return inner if "{" not in inner and "}" not in inner else None
    return None
