"""A private redis-server and the Django settings every compared engine needs."""

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


def configure_django(redis_url: str) -> None:
    """Point every engine at ``redis_url``; must run before any engine is imported."""
    settings.configure(
        SECRET_KEY="benchmarks-only-not-secret",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "elastic_sessions",
        ],
        DATABASES={},
        USE_TZ=True,
        SESSION_COOKIE_AGE=SESSION_COOKIE_AGE,
        # Django's `cache` engine on django-redis, with its defaults (pickle, no
        # compression), as most sites run it.
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
