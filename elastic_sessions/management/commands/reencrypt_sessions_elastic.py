from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from ...exceptions import SessionStoreUnavailable
from ...gc import durable_tables_exist
from ...reencryption import ReencryptionReport, reencrypt_database, reencrypt_redis


class Command(BaseCommand):
    help = (
        "Rewrite every stored session value under the first of ENCRYPTION_KEYS: values "
        "stored in the clear or under an older key are encrypted anew (with None first, "
        "written in the clear). Each rewrite is a compare-and-set, so concurrent requests "
        "lose nothing; run it after adding a key, then remove the old one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be rewritten; change nothing."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            help="Database rows per query, and the SCAN COUNT hint (default 500).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size: int = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        dry_run: bool = options["dry_run"]
        report = ReencryptionReport()
        progress = self._progress(options["verbosity"])
        try:
            reencrypt_redis(report, batch_size=batch_size, dry_run=dry_run, progress=progress)
            if durable_tables_exist():
                reencrypt_database(
                    report, batch_size=batch_size, dry_run=dry_run, progress=progress
                )
        except SessionStoreUnavailable as err:
            raise CommandError(f"{err}. Run again later; what was done stays done.") from err
        except DatabaseError as err:
            raise CommandError(f"The database failed: {err}. Run again later.") from err
        if options["verbosity"] > 0:
            verb = "would rewrite" if dry_run else "rewritten"
            self.stdout.write(
                f"redis values {verb}: {report.redis_values}; database values {verb}: "
                f"{report.database_values}; keys scanned: {report.keys_scanned}; "
                f"changed meanwhile (left as written): {report.skipped_changed}; "
                f"unreadable with the configured keys: {report.unreadable}"
            )

    def _progress(self, verbosity: int) -> Any:
        if verbosity > 0 and sys.stdout.isatty():
            return lambda line: self.stdout.write(f"\r{line}", ending="")
        return lambda line: None
