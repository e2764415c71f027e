"""Redis Cluster over TLS (issue 7): three primaries that accept only TLS connections with
a client certificate, on the client port and the cluster bus, reached with ``rediss://``,
``CLUSTER`` and the ``SSL_`` keys; sessions, revocation and the GC's walk over every
primary work there, sync and async.

A cluster of its own: the shared one in tests/redis_topologies.py speaks plain TCP,
which its helpers rely on.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.management import call_command

from elastic_sessions import api
from elastic_sessions.backends.redis import SessionStore
from elastic_sessions.exceptions import SessionStoreUnavailable

from .contract import redis_key_of
from .load import COOKIE, with_cookie
from .redis_server import RedisServer, claim_free_port, release_port
from .redis_topologies import CLUSTER_SLOTS, HOST, wait_until
from .tls import client_tls_options, engine_tls_settings, make_certificates

pytestmark = [pytest.mark.topology, pytest.mark.django_db]

PRIMARIES = 3
MUTUAL_TLS = ["--tls-cluster", "yes", "--tls-replication", "yes", "--tls-auth-clients", "yes"]


@dataclass
class TlsCluster:
    basedir: Path
    certs: dict[str, Path]
    servers: list[RedisServer] = field(default_factory=list)
    bus_ports: list[int] = field(default_factory=list)

    def client(self, port: int) -> redis.Redis:
        """An admin client of one node, over TLS with the client certificate."""
        options = client_tls_options(self.certs)
        return redis.Redis(HOST, port, ssl=True, decode_responses=True, socket_timeout=2, **options)

    def start(self) -> TlsCluster:
        for index in range(PRIMARIES):
            datadir = self.basedir / f"node-{index}"
            datadir.mkdir(parents=True)
            bus_port = claim_free_port()
            self.bus_ports.append(bus_port)
            server = RedisServer(datadir=datadir, port=claim_free_port(), tls=self.certs)
            server.extra_args = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(datadir / "nodes.conf"),
                "--cluster-port", str(bus_port),
                *MUTUAL_TLS,
            ]  # fmt: skip
            self.servers.append(server)
            server.start()
        cli = shutil.which("redis-cli")
        assert cli is not None, "redis-cli is missing: run `apt-get install redis-tools`"
        created = subprocess.run(
            [cli, "--tls", "--cacert", str(self.certs["ca"]),
             "--cert", str(self.certs["client_cert"]), "--key", str(self.certs["client_key"]),
             "--cluster", "create", *(f"{HOST}:{s.port}" for s in self.servers),
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert created.returncode == 0, created.stdout + created.stderr
        wait_until(self._healthy, 30, "a healthy TLS cluster")
        return self

    def _healthy(self) -> bool:
        for server in self.servers:
            with self.client(server.port) as node:
                text = node.execute_command("CLUSTER", "INFO")
            state = dict(line.split(":", 1) for line in text.split() if ":" in line)
            if state["cluster_state"] != "ok" or int(state["cluster_slots_ok"]) != CLUSTER_SLOTS:
                return False
            if int(state["cluster_known_nodes"]) != PRIMARIES:
                return False
        return True

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
            release_port(server.port)
        for port in self.bus_ports:
            release_port(port)


@pytest.fixture
def tls_cluster(tmp_path: Path, settings: Any) -> Iterator[TlsCluster]:
    """The cluster, and the engines pointed at one of its nodes."""
    (tmp_path / "certs").mkdir()
    certs = make_certificates(tmp_path / "certs")
    cluster = TlsCluster(tmp_path / "cluster", certs)
    try:
        cluster.start()
        first, *others = cluster.servers
        settings.ELASTIC_SESSIONS = {
            "REDIS_URL": f"rediss://{HOST}:{first.port}/0",
            "CLUSTER": True,
            "CLUSTER_NODES": [f"{HOST}:{s.port}" for s in others],
            **engine_tls_settings(certs),
        }
        yield cluster
    finally:
        cluster.stop()


def new_session(value: str, user_id: str | None = None) -> str:
    session = SessionStore()
    session["a"] = value
    if user_id is not None:
        session["_auth_user_id"] = user_id
    session.save()
    assert session.session_key is not None
    return session.session_key


async def async_round_trip(value: str) -> str:
    session = SessionStore()
    await session.aset("a", value)
    await session.asave()
    return str(await SessionStore(session.session_key).aget("a"))


def test_sessions_spread_over_every_tls_primary(tls_cluster, django_user_model):
    """Sessions are stored over TLS on all three primaries, read back sync and async,
    revoked per user, and collected by the GC walking every primary."""
    user = django_user_model.objects.create_user("tls-user")
    keys = [new_session(f"v{n}", str(user.pk)) for n in range(30)]
    assert [SessionStore(key)["a"] for key in keys] == [f"v{n}" for n in range(30)]
    assert asyncio.run(async_round_trip("async")) == "async"
    holders = set()
    for server in tls_cluster.servers:
        with tls_cluster.client(server.port) as node:
            # KEYS on one node lists that node's keys only (EXISTS would be MOVED).
            if any(node.keys(redis_key_of(key)) for key in keys):
                holders.add(server.port)
    assert holders == {server.port for server in tls_cluster.servers}

    assert api.revoke_user_sessions(user) == len(keys)
    assert all(not SessionStore(key).exists(key) for key in keys)
    out = StringIO()
    call_command("clearsessions_elastic", stdout=out)
    assert "error" not in out.getvalue().lower(), out.getvalue()


def test_a_client_without_the_certificate_is_refused(tls_cluster, settings):
    """The nodes really demand the client certificate: without it no node answers,
    which is an outage (a 503 that keeps the cookie), not a crash."""
    key = new_session("stored with the certificate")
    options = dict(settings.ELASTIC_SESSIONS)
    del options["SSL_CERTFILE"], options["SSL_KEYFILE"]
    settings.ELASTIC_SESSIONS = options
    with pytest.raises(SessionStoreUnavailable, match="cannot be connected"):
        new_session("refused")
    response = with_cookie(key).get("/keys/a/")
    assert response.status_code == 503
    assert COOKIE not in response.cookies
    with pytest.raises(SessionStoreUnavailable, match="cannot be connected"):
        asyncio.run(async_round_trip("refused"))
