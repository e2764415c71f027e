from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from elastic_sessions.connection import reset_clients

from .redis_server import RedisServer, claim_free_port, release_port


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


@pytest.fixture
def use_server(settings: Any) -> Callable[..., None]:
    """Switch the engines to another server (and any extra settings)."""

    def switch(server: RedisServer, **extra: object) -> None:
        settings.ELASTIC_SESSIONS = {"REDIS_URL": server.url, **extra}

    return switch
