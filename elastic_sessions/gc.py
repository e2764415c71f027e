"""Garbage collection: what neither Redis nor a request removes by itself.

* Database rows of ended sessions (the hybrid engine's durable copies), deleted
  in batches of ``batch_size`` sessions, one short transaction each: memory and
  lock time stay bounded however many rows have piled up (Django's
  ``clearsessions`` deletes them all in one statement).
* Under the key prefix, in one resumable ``SCAN`` pass over every primary:
  user-index entries of sessions that ended, and keys that are not ours or not
  of the right type (orphaned or malformed).  Redis expires sessions itself.

Every step is idempotent, so several hosts may run it at once: they at worst
repeat each other's work.  ``deadline`` (a ``time.monotonic()`` value) stops the
work between batches (after at least one, so every run makes progress); the
next run resumes where this one stopped (database rows are still there to be
found; the SCAN cursors are kept in Redis).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from django.db import connection
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from .conf import elastic_settings
from .connection import get_client, is_cluster, primaries, translate_outages
from .keys import is_valid_storage_id, listing_redis_keys
from .models import DurableSession
from .storage.database import delete_ended
from .storage.listing_index import prune_listing
from .storage.redis import prune_index

# How long a stopped SCAN pass may be resumed; after that a run starts over.
_CURSOR_TTL = 24 * 3600
# The cursor field of a primary this pass has finished.
_DONE = "done"

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
    """One SCAN pass under the prefix on every primary, resumed where a stopped run left it.

    Each primary has its own cursor (a cluster's keyspace is the union of its
    primaries'); they are kept together in the hash ``<prefix>:gc:cursor``, one
    field per primary, where ``done`` marks a primary this pass has finished.
    """
    client = get_client()
    prefix = elastic_settings.KEY_PREFIX
    cursor_key = f"{prefix}:gc:cursor"
    with translate_outages("scan the session keys"):
        nodes = {_node_name(client, node): node for node in primaries(client)}
        kept = _kept_cursors(client, cursor_key)
        cursors: dict[str, int | None] = {name: kept.get(name, 0) for name in nodes}
        pages = 0
        for name, node in nodes.items():
            while (cursor := cursors[name]) is not None:
                if pages and time.monotonic() >= deadline:
                    _keep_cursors(client, cursor_key, cursors)
                    report.finished = False
                    return
                cursor, raw_keys = node.scan(cursor, match=f"{prefix}:*", count=batch_size)
                pages += 1
                keys = [_text(raw) for raw in raw_keys if _text(raw) != cursor_key]
                # SCAN and TYPE go to the primary that holds the keys; the rest goes
                # through the cluster-aware client (an index names sessions on
                # other primaries).  The types of a page in one round trip.
                pipe = node.pipeline(transaction=False)
                for key in keys:
                    pipe.type(key)
                for key, kind in zip(keys, pipe.execute(), strict=True):
                    _check_key(
                        client, key, _text(kind), prefix=prefix, report=report, dry_run=dry_run
                    )
                report.keys_scanned += len(keys)
                progress(f"redis: {report.keys_scanned} keys scanned")
                cursors[name] = cursor or None
        client.delete(cursor_key)


def _node_name(client: redis.Redis, node: redis.Redis) -> str:
    """The cursor field of a primary: its address on a cluster, else one fixed name
    (a standalone or Sentinel-managed server has one keyspace, whatever its address)."""
    if not is_cluster(client):
        return "primary"
    options = node.connection_pool.connection_kwargs
    return f"{options['host']}:{options['port']}"


def _kept_cursors(client: redis.Redis, cursor_key: str) -> dict[str, int | None]:
    """The cursors a stopped run kept: a primary's cursor, or None once it is done."""
    try:
        raw = client.hgetall(cursor_key)
    except ResponseError as err:
        if not str(err).startswith("WRONGTYPE"):
            raise
        # Not a hash (a single cursor of an earlier development version, or
        # garbage): it would fail every run until it expired, so start over.
        client.delete(cursor_key)
        return {}
    cursors: dict[str, int | None] = {}
    for field, value in raw.items():
        text = _text(value)
        if text == _DONE:
            cursors[_text(field)] = None
        elif text.isdigit():
            cursors[_text(field)] = int(text)
    return cursors


def _keep_cursors(client: redis.Redis, cursor_key: str, cursors: dict[str, int | None]) -> None:
    # Primaries not started yet stay out: an absent field starts from 0.
    fields: dict[FieldT, EncodableT] = {
        name: _DONE if cursor is None else cursor for name, cursor in cursors.items() if cursor != 0
    }
    pipe = client.pipeline(transaction=False)
    pipe.hset(cursor_key, mapping=fields)
    pipe.expire(cursor_key, _CURSOR_TTL)
    pipe.execute()


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
