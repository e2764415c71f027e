from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, DatabaseError

from ...exceptions import SessionStoreUnavailable
from ...migration import MigrationReport, move_cache_sessions, move_database_sessions


class Command(BaseCommand):
    help = (
        "Move the live sessions of Django's db/cached_db table (or of its cache engine on a "
        "django-redis cache) into SESSION_ENGINE, an elastic engine, under the same keys, so "
        "nobody is signed out by the switch. "
        "Never overwrites a session the target already holds; a moved row leaves the "
        "source table unless --keep-source. Exit status 1 when a session could not be moved."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--source",
            choices=["db", "cache"],
            default="db",
            help="db: Django's session table, for the db and cached_db engines (default); "
            "cache: the keys of Django's cache engine on the django-redis --cache-alias.",
        )
        parser.add_argument(
            "--cache-alias",
            default=None,
            help="With --source cache: the CACHES alias (default SESSION_CACHE_ALIAS).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be moved; change nothing."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            help="Source rows read per query (default 500).",
        )
        parser.add_argument(
            "--after",
            default="",
            metavar="CHECKPOINT",
            help="With --source db: resume after this checkpoint (printed after each batch).",
        )
        parser.add_argument(
            "--keep-source",
            action="store_true",
            help="Leave the source rows in place (a copy ahead of the switch; see the docs).",
        )
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help="With --source db: the database alias of Django's session table "
            "(default 'default').",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size: int = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        source: str = options["source"]
        if source == "cache" and options["after"]:
            raise CommandError(
                "--after applies to --source db only; with --source cache a run resumes by "
                "itself (moved sessions leave the cache)."
            )
        verbosity: int = options["verbosity"]
        dry_run: bool = options["dry_run"]
        report = MigrationReport()
        common: dict[str, Any] = {
            "batch_size": batch_size,
            "dry_run": dry_run,
            "keep_source": options["keep_source"],
            "progress": self._progress(verbosity),
        }
        try:
            if source == "cache":
                alias: str = options["cache_alias"] or settings.SESSION_CACHE_ALIAS
                move_cache_sessions(report, cache_alias=alias, **common)
            else:
                move_database_sessions(
                    report, database=options["database"], after=options["after"], **common
                )
        except ImproperlyConfigured as err:
            raise CommandError(str(err)) from err
        except (SessionStoreUnavailable, DatabaseError) as err:
            self._summary(report, dry_run, verbosity)
            raise CommandError(
                f"{err}. What was moved stays moved; run again later"
                + (f" (to skip what is done: --after {report.checkpoint})." if report.checkpoint
                   else ".")
            ) from err  # fmt: skip
        self._summary(report, dry_run, verbosity)
        if report.failures:
            raise CommandError(
                f"{report.failures} live session(s) could not be moved (see the warnings "
                "logged by elastic_sessions.migration); their users will have to sign in again.",
                returncode=1,
            )

    def _progress(self, verbosity: int) -> Any:
        if verbosity < 2:
            return lambda _report: None

        def show(report: MigrationReport) -> None:
            checkpoint = f"; checkpoint {report.checkpoint}" if report.checkpoint else ""
            self.stdout.write(f"batch {report.batches}: {report.examined} examined{checkpoint}")

        return show

    def _summary(self, report: MigrationReport, dry_run: bool, verbosity: int) -> None:
        if verbosity < 1:
            return
        if dry_run:
            self.stdout.write(
                f"examined: {report.examined}; would copy: {report.copied}; "
                f"already present: {report.already_present}; expired (skipped): "
                f"{report.expired}; undecodable (skipped): {report.undecodable}; "
                f"incompatible keys (skipped): {report.incompatible_keys}"
            )
            return
        self.stdout.write(
            f"examined: {report.examined}; copied: {report.copied}; "
            f"already present: {report.already_present}; expired (skipped): {report.expired}; "
            f"undecodable (skipped): {report.undecodable}; "
            f"incompatible keys (skipped): {report.incompatible_keys}; "
            f"verified: {report.verified}; mismatched: {report.mismatched}; "
            f"removed from the source: {report.removed_from_source}"
            + (f"; last checkpoint: {report.checkpoint}" if report.checkpoint else "")
        )
