from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...api import SessionStats, session_stats
from ...exceptions import SessionStoreUnavailable
from ...stats import DEFAULT_BATCH_SIZE, DEFAULT_SAMPLE, DEFAULT_SOON, DEFAULT_TOP


class Command(BaseCommand):
    help = (
        "Count the sessions of the configured elastic engine: active sessions, the users "
        "with the most sessions, memory per session, sessions expiring soon, the hybrid "
        "engine's database rows and pending Redis invalidations, and this process's "
        "breaker. Uses SCAN (never KEYS). Exit status 0, or 1 when the store the engine "
        "needs cannot be reached."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json", action="store_true", help="Print one JSON object (stable keys)."
        )
        parser.add_argument(
            "--top",
            type=int,
            default=DEFAULT_TOP,
            help=f"List the N users with the most sessions (default {DEFAULT_TOP}; 0: none).",
        )
        parser.add_argument(
            "--soon",
            type=int,
            default=DEFAULT_SOON,
            metavar="SECONDS",
            help=f"Count sessions ending within SECONDS (default {DEFAULT_SOON}).",
        )
        parser.add_argument(
            "--sample",
            type=int,
            default=DEFAULT_SAMPLE,
            help=f"Measure N sessions with MEMORY USAGE (default {DEFAULT_SAMPLE}; 0: none).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help=f"The SCAN COUNT hint and keys per round trip (default {DEFAULT_BATCH_SIZE}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        for name in ("top", "soon", "sample"):
            if options[name] < 0:
                raise CommandError(f"--{name} must be 0 or more.")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        try:
            stats = session_stats(
                top=options["top"],
                soon=options["soon"],
                sample=options["sample"],
                batch_size=options["batch_size"],
            )
        except SessionStoreUnavailable as err:
            raise CommandError(f"{err}. No figures were collected; run again later.") from err
        if options["json"]:
            self.stdout.write(json.dumps(stats.as_dict(), indent=2, sort_keys=True))
        elif options["verbosity"] >= 1:
            self.stdout.write("\n".join(_table(stats)))


def _table(stats: SessionStats) -> list[str]:
    when = datetime.fromtimestamp(stats.generated_at, UTC).isoformat(timespec="seconds")
    lines = [f"Engine: {stats.engine}, at {when}"]
    rows: list[tuple[str, object]] = []
    if stats.redis is not None:
        redis = stats.redis
        label = "sessions" if stats.engine == "redis" else "session copies"
        rows += [
            (f"Redis {label}", redis.sessions),
            (f"  ending within {stats.soon_seconds} s unless used", redis.expiring_soon),
            ("  without a TTL", redis.without_ttl),
            ("  fences and hashes without metadata", redis.without_metadata),
            ("  other keys under the prefix", redis.other_keys),
        ]
        if stats.engine == "redis":
            rows += [
                ("  users with sessions (indexes)", redis.user_indexes),
                ("  signed-in sessions (index entries)", redis.indexed_sessions),
            ]
        if redis.memory is not None:
            memory = redis.memory
            rows += [
                (f"  bytes per session (sample of {memory.sampled})", memory.bytes_per_session),
                ("  estimated bytes, all sessions", memory.estimated_total_bytes),
            ]
        rows.append(("  evicted keys (whole server)", _or_dash(redis.evicted_keys)))
    if stats.redis_error is not None:
        rows.append(("Redis unreachable", stats.redis_error))
    if stats.database is not None:
        database = stats.database
        rows += [
            ("Database rows", database.rows),
            ("  live", database.live),
            ("  expired, not yet purged", database.expired),
            ("  signed in", database.signed_in),
            (f"  ending within {stats.soon_seconds} s unless used", database.expiring_soon),
            ("  pending Redis invalidations", database.pending_invalidations),
            ("  oldest pending invalidation, s", _or_dash(database.oldest_invalidation_age)),
        ]
    if stats.breaker is not None:
        breaker = stats.breaker
        rows += [
            ("Breaker (this process)", breaker.state),
            ("  open for, s", _or_dash(breaker.open_for_seconds)),
        ]
    width = max(len(label) for label, _ in rows)
    lines += [f"{label:<{width}}  {value}" for label, value in rows]
    if stats.top_users:
        by = "user hash" if stats.top_users_by == "user_hash" else "user id"
        lines.append(f"Users with the most sessions ({by}, sessions)")
        lines += [f"  {entry.user}  {entry.sessions}" for entry in stats.top_users]
    return lines


def _or_dash(value: object) -> object:
    return "-" if value is None else value
