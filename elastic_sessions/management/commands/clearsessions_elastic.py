from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...exceptions import SessionStoreUnavailable
from ...storage.redis import prune_user_indexes


class Command(BaseCommand):
    help = (
        "Garbage-collect what Redis does not expire by itself: per-user index entries "
        "of sessions that ended, and index keys of the wrong type. Safe to run from "
        "cron on several hosts at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be removed; change nothing."
        )
        parser.add_argument(
            "--batch-size", type=int, default=500, help="SCAN COUNT hint (default 500)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        try:
            report = prune_user_indexes(
                batch_size=options["batch_size"], dry_run=options["dry_run"]
            )
        except SessionStoreUnavailable as err:
            raise CommandError(f"{err}. Nothing was changed; run again later.") from err
        verb = "would remove" if options["dry_run"] else "removed"
        if options["verbosity"] >= 1:
            self.stdout.write(
                f"user indexes scanned: {report.indexes}; "
                f"stale entries {verb}: {report.stale_entries}; "
                f"broken indexes {verb}: {report.broken_indexes}"
            )
