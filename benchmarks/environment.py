"""A private redis-server, a scratch SQLite database, and the Django settings
every compared engine needs."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import django
from django.conf import settings

from tests.redis_server import RedisServer, claim_free_port, release_port

# Django's default, spelled out: every engine gets the same idle timeout.
SESSION_COOKIE_AGE = 1209600

# WAL with synchronous=NORMAL, as SQLite is run in production: a commit appends
# to the log without an fsync (one per checkpoint instead).  With the default
# rollback journal and synchronous=FULL every commit waits for two or three
# fsyncs, and the database engines' figures would measure this machine's disk,
# not the engines.  Every database engine gets the same file and pragmas.
SQLITE_PRAGMAS = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A throwaway redis-server on a free loopback port, stopped by PID afterwards."""
    datadir = Path(tempfile.mkdtemp(prefix="elastic-sessions-bench-"))
    server = RedisServer(datadir=datadir, port=claim_free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        release_port(server.port)
        shutil.rmtree(datadir, ignore_errors=True)


@contextmanager
def scratch_database() -> Iterator[Path]:
    """The path of a SQLite file in a fresh temporary directory, removed afterwards."""
    datadir = Path(tempfile.mkdtemp(prefix="elastic-sessions-bench-db-"))
    try:
        yield datadir / "sessions.sqlite3"
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


def configure_django(redis_url: str, database: Path) -> None:
    """Point every engine at ``redis_url`` and ``database``; must run before any
    engine is imported."""
    settings.configure(
        SECRET_KEY="benchmarks-only-not-secret",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "elastic_sessions",
        ],
        # A file, not ":memory:": the database engines pay for real page writes.
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(database),
                "OPTIONS": {"init_command": SQLITE_PRAGMAS},
            }
        },
        USE_TZ=True,
        SESSION_COOKIE_AGE=SESSION_COOKIE_AGE,
        # Django's `cache` and `cached_db` engines on django-redis, with its
        # defaults (pickle, no compression), as most sites run them.
        CACHES={
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": redis_url,
                "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
            }
        },
        SESSION_CACHE_ALIAS="default",
        # django-redis-sessions reads these when its module is first imported.
        SESSION_REDIS={"url": redis_url, "prefix": "", "socket_timeout": 1.0},
        ELASTIC_SESSIONS={"REDIS_URL": redis_url},
    )
    django.setup()


def migrate() -> None:
    """Create the tables of Django's `db`/`cached_db` engines and of the hybrid engine."""
    from django.core.management import call_command

    for app in ("sessions", "elastic_sessions"):
        call_command("migrate", app, verbosity=0, interactive=False)
