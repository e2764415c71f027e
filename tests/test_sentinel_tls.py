"""Sentinel over TLS (issue 7): sentinels and data nodes that accept only TLS connections
with a client certificate, reached with ``rediss://``, ``SENTINELS`` and the ``SSL_`` keys,
sync and async, before and after a failover.

A topology of its own (one primary, one replica, one sentinel with quorum 1): the shared
one in tests/redis_topologies.py speaks plain TCP, which its helpers rely on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from elastic_sessions.backends.redis import SessionStore
from elastic_sessions.exceptions import SessionStoreUnavailable

from .contract import redis_key_of
from .redis_server import RedisServer, claim_free_port, release_port
from .redis_topologies import FAST_SYNC, HOST, SentinelServer, wait_until
from .tls import client_tls_options, engine_tls_settings, make_certificates

pytestmark = pytest.mark.topology

SERVICE = "elastic-tls"
# Every connection, the sentinel's own to the data nodes included, is TLS with a
# certificate the servers check.
MUTUAL_TLS = ["--tls-replication", "yes", "--tls-auth-clients", "yes"]


@dataclass
class TlsSentinelTopology:
    basedir: Path
    certs: dict[str, Path]
    servers: list[RedisServer] = field(default_factory=list)

    def client(self, port: int) -> redis.Redis:
        """An admin client, over TLS with the client certificate."""
        options = client_tls_options(self.certs)
        return redis.Redis(HOST, port, ssl=True, decode_responses=True, socket_timeout=2, **options)

    def _start(self, name: str, server_class: type[RedisServer], **options: Any) -> RedisServer:
        datadir = self.basedir / name
        datadir.mkdir(parents=True)
        server = server_class(datadir=datadir, port=claim_free_port(), tls=self.certs, **options)
        self.servers.append(server)
        return server.start()

    def start(self) -> TlsSentinelTopology:
        primary = self._start("primary", RedisServer, extra_args=[*FAST_SYNC, *MUTUAL_TLS])
        replica_args = [*FAST_SYNC, *MUTUAL_TLS, "--replicaof", HOST, str(primary.port)]
        self._start("replica", RedisServer, extra_args=replica_args)
        config = self.basedir / "sentinel.conf"
        config.write_text(
            "sentinel resolve-hostnames no\n"
            f"sentinel announce-ip {HOST}\n"
            f"sentinel monitor {SERVICE} {HOST} {primary.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        self._start("sentinel", SentinelServer, config_file=config, extra_args=MUTUAL_TLS)
        wait_until(self._replica_known, 20, "the sentinel sees the replica in sync")
        return self

    @property
    def primary(self) -> RedisServer:
        return self.servers[0]

    @property
    def sentinel(self) -> RedisServer:
        return self.servers[2]

    def primary_port(self) -> int:
        with self.client(self.sentinel.port) as sentinel:
            _, port = sentinel.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def promoted_port(self, old_port: int) -> int | None:
        """The new primary's port once the sentinel's own record of the service names it
        and is healthy: what redis-py's `discover_master` asks for.

        GET-MASTER-ADDR-BY-NAME names the promoted replica earlier, while the record still
        holds the old primary flagged down; a client asking then is told no master exists.
        """
        with self.client(self.sentinel.port) as sentinel:
            state = sentinel.sentinel_master(SERVICE)
        healthy = state["is_master"] and not state["is_sdown"] and not state["is_odown"]
        return state["port"] if healthy and state["port"] != old_port else None

    def _replica_known(self) -> bool:
        with self.client(self.sentinel.port) as sentinel:
            replicas = sentinel.sentinel_slaves(SERVICE)
        return any(r["master-link-status"] == "ok" and not r["is_sdown"] for r in replicas)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
            release_port(server.port)


@pytest.fixture
def tls_sentinel(tmp_path: Path, settings: Any) -> Iterator[TlsSentinelTopology]:
    """The topology, and the engines pointed at it through the sentinel."""
    (tmp_path / "certs").mkdir()
    certs = make_certificates(tmp_path / "certs")
    topology = TlsSentinelTopology(tmp_path / "topology", certs)
    try:
        topology.start()
        settings.ELASTIC_SESSIONS = {
            "REDIS_URL": "rediss:///0",
            "SENTINELS": [f"{HOST}:{topology.sentinel.port}"],
            "SENTINEL_SERVICE": SERVICE,
            **engine_tls_settings(certs),
        }
        yield topology
    finally:
        topology.stop()


def round_trip(value: str) -> tuple[str, str]:
    """The value read back, and the session's key."""
    session = SessionStore()
    session["a"] = value
    session.save()
    assert session.session_key is not None
    return SessionStore(session.session_key)["a"], session.session_key


async def async_round_trip(value: str) -> str:
    session = SessionStore()
    await session.aset("a", value)
    await session.asave()
    stored = await SessionStore(session.session_key).aget("a")
    return str(stored)


def test_sessions_go_through_tls_sentinels_to_the_tls_primary(tls_sentinel):
    """The engines find the primary through a TLS-only sentinel and store sessions on
    it over TLS with the client certificate, sync and async; after a failover, on the
    promoted replica."""
    first_primary = tls_sentinel.primary_port()
    value, key = round_trip("sync")
    assert value == "sync"
    assert asyncio.run(async_round_trip("async")) == "async"
    with tls_sentinel.client(first_primary) as primary:
        assert primary.exists(redis_key_of(key)) == 1  # on the primary the sentinel named

    session = SessionStore()
    session["kept"] = "across the failover"
    session.save()
    with tls_sentinel.client(first_primary) as primary:
        assert primary.wait(1, 2000) == 1  # the replica has it before the kill
    tls_sentinel.primary.kill()
    promoted = wait_until(
        lambda: tls_sentinel.promoted_port(first_primary), 20, "the sentinel promoted the replica"
    )
    wait_until(
        lambda: tls_sentinel.client(promoted).info("replication")["role"] == "master",
        10,
        "the promoted replica accepts writes",
    )
    assert SessionStore(session.session_key)["kept"] == "across the failover"
    assert round_trip("after")[0] == "after"
    assert asyncio.run(async_round_trip("async after")) == "async after"


def test_a_client_without_the_certificate_is_refused(tls_sentinel, settings):
    """The servers really demand the client certificate: without SSL_CERTFILE the
    engine cannot even ask the sentinel, and says the store is unavailable."""
    options = dict(settings.ELASTIC_SESSIONS)
    del options["SSL_CERTFILE"], options["SSL_KEYFILE"]
    settings.ELASTIC_SESSIONS = options
    with pytest.raises(SessionStoreUnavailable) as refused:
        round_trip("refused")
    assert "MasterNotFoundError" in str(refused.value)  # no sentinel would answer
