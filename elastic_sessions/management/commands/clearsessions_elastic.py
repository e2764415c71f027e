from __future__ import annotations

import math
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from ...exceptions import SessionStoreUnavailable
from ...gc import GcReport, durable_tables_exist, purge_database, scan_keys

# Exit status when --max-seconds stopped the run with work left (the next run
# resumes): distinct from 0 (all done) and 1 (failed), for cron wrappers.
INCOMPLETE = 3


class Command(BaseCommand):
    help = (
        "Garbage-collect what Redis does not expire by itself: database rows of ended "
        "sessions (hybrid engine) in bounded batches, per-user index entries of ended "
        "sessions, and orphaned or malformed keys under the prefix. Safe to run from "
        "cron on several hosts at once. Exit status: 0 done, 1 failed, 3 stopped by "
        "--max-seconds (run again to resume)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be removed; change nothing."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            help="Database sessions per transaction, and the SCAN COUNT hint (default 500).",
        )
        parser.add_argument(
            "--max-seconds",
            type=float,
            default=None,
            help="Stop cleanly after about this long; the next run resumes (exit status 3).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size: int = options["batch_size"]
        max_seconds: float | None = options["max_seconds"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        if max_seconds is not None and max_seconds <= 0:
            raise CommandError("--max-seconds must be greater than 0.")
        deadline = time.monotonic() + (max_seconds if max_seconds is not None else math.inf)
        dry_run: bool = options["dry_run"]
        report = GcReport()
        progress = self._progress(options["verbosity"])
        try:
            if durable_tables_exist():
                purge_database(
                    report, batch_size=batch_size, dry_run=dry_run, deadline=deadline,
                    progress=progress,
                )  # fmt: skip
            if report.finished:
                scan_keys(
                    report, batch_size=batch_size, dry_run=dry_run, deadline=deadline,
                    progress=progress,
                )  # fmt: skip
        except SessionStoreUnavailable as err:
            self._summary(report, dry_run, options["verbosity"])
            raise CommandError(f"{err}. Run again later; what was done stays done.") from err
        except DatabaseError as err:
            self._summary(report, dry_run, options["verbosity"])
            raise CommandError(f"The database failed: {err}. Run again later.") from err
        self._summary(report, dry_run, options["verbosity"])
        if not report.finished:
            raise CommandError(
                "Stopped after --max-seconds with work left; the next run resumes.",
                returncode=INCOMPLETE,
            )

    def _progress(self, verbosity: int) -> Any:
        # A live line on a terminal; nothing in between on a pipe or in cron.
        if verbosity < 1 or not self.stdout.isatty():
            return lambda _message: None

        def show(message: str) -> None:
            self.stdout.write(f"\r{message}\x1b[K", ending="")
            self.stdout.flush()

        return show

    def _summary(self, report: GcReport, dry_run: bool, verbosity: int) -> None:
        if verbosity < 1:
            return
        verb = "would remove" if dry_run else "removed"
        if self.stdout.isatty():
            self.stdout.write("")
        self.stdout.write(
            f"ended database sessions {verb}: {report.database_rows} "
            f"({report.database_batches} batches, at most {report.largest_batch} per transaction); "
            f"keys scanned: {report.keys_scanned}; user indexes: {report.user_indexes}; "
            f"stale index entries {verb}: {report.stale_index_entries}; "
            f"malformed keys {verb}: {report.malformed_keys}; "
            f"{'complete' if report.finished else 'incomplete (resume with the next run)'}"
        )
