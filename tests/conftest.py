from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from elastic_sessions.connection import reset_clients
from elastic_sessions.middleware import _Outage

from .postgres_server import PostgresServer, make_basedir
from .redis_server import RedisServer, claim_free_port, release_port

# --database choices, and the `connection.vendor` Django reports for each.
DATABASE_VENDORS = {"sqlite": "sqlite", "postgres": "postgresql"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database",
        choices=sorted(DATABASE_VENDORS),
        default="sqlite",
        help="the database behind Django's default alias: sqlite (in memory, the default) or "
        "postgres (a throwaway cluster started for the run); ./dev test runs the tests marked "
        "`database` a second time with `-m database --database=postgres`.",
    )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One shared server for tests that do not break it."""
    server = RedisServer(datadir=tmp_path_factory.mktemp("redis-shared"), port=claim_free_port())
    server.start()
    yield server
    server.stop()
    release_port(server.port)


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start private servers (to kill, fill or reconfigure); all stopped afterwards."""
    servers: list[RedisServer] = []

    def start(**options: Any) -> RedisServer:
        datadir = tmp_path / f"redis-{len(servers)}"
        datadir.mkdir()
        if options.pop("unix", False):
            options["unix_socket"] = datadir / "redis.sock"
        else:
            options["port"] = claim_free_port()
        server = RedisServer(datadir=datadir, **options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
        if server.port:
            release_port(server.port)


@pytest.fixture(autouse=True)
def elastic_redis(redis_server: RedisServer, settings: Any) -> Iterator[RedisServer]:
    """Point the engines at the shared server, empty, for every test."""
    settings.ELASTIC_SESSIONS = {"REDIS_URL": redis_server.url}
    redis_server.client().flushall()
    yield redis_server
    reset_clients()


@pytest.fixture(autouse=True)
def no_outage_left_over() -> Iterator[None]:
    """Forget the middleware's process-wide outage state after each test.

    A test that ends during an outage (a 503) would otherwise make the next
    test's first request announce a recovery it never saw.
    """
    yield
    _Outage.since = None


@pytest.fixture
def use_server(settings: Any) -> Callable[..., None]:
    """Switch the engines to another server (and any extra settings)."""

    def switch(server: RedisServer, **extra: object) -> None:
        settings.ELASTIC_SESSIONS = {"REDIS_URL": server.url, **extra}

    return switch


@pytest.fixture(scope="session")
def database_vendor(request: pytest.FixtureRequest) -> str:
    """The `connection.vendor` of this run's default database (`--database`)."""
    return DATABASE_VENDORS[request.config.getoption("database")]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster, started the first time a test needs it."""
    server = PostgresServer(basedir=make_basedir(), port=claim_free_port())
    try:
        yield server.start()
    finally:
        server.remove()
        release_port(server.port)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None,
    request: pytest.FixtureRequest,
) -> None:
    """Under `--database=postgres`, point the default alias at the throwaway cluster.

    pytest-django runs this just before it creates the test databases, so the cluster starts
    only in runs where some test uses the database.
    """
    if request.config.getoption("database") != "postgres":
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    switch_default_database(server.django_database())


def switch_default_database(database: dict[str, Any]) -> None:
    from django.conf import settings
    from django.db import connections

    # A connection already opened to the old database would outlive the switch.
    for connection in connections.all(initialized_only=True):
        connection.close()
        del connections[connection.alias]
    # Assign into the existing dict: the connection handler keeps a reference to it once read.
    settings.DATABASES["default"] = database
    # Fill in the keys Django adds when it first reads DATABASES (TEST, OPTIONS, ...).
    connections.configure_settings(settings.DATABASES)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> Iterator[None]:
    """pytest-django's fixture, plus: close the async ORM's connections before the teardown.

    The async ORM runs its queries in asgiref's worker thread, whose connection outlives the
    tests; PostgreSQL refuses to drop a database that has clients ("is being accessed by other
    users"), so pytest-django's teardown would leave the test database behind.
    """
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    # sync_to_async's default (thread_sensitive) runs this in that same worker thread.
    asyncio.run(sync_to_async(connections.close_all)())
