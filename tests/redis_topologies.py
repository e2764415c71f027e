"""Sentinel and Cluster topologies of real ``redis-server`` processes on loopback.

Issue 7: the engines must survive the death of a primary, so these start what production runs
(a primary, a replica and three sentinels; three primaries with one replica each), built from
``RedisServer`` and the port helpers, and break it with SIGKILL.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from .redis_server import RedisServer, claim_free_port, release_port

HOST = "127.0.0.1"
CLUSTER_SLOTS = 16384
Address = tuple[str, int]
T = TypeVar("T")
# A replica's first full sync otherwise waits 5 s for more replicas to share the transfer.
FAST_SYNC = ("--repl-diskless-sync-delay", "0")


def wait_until(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll `condition` until it returns something truthy; raise `TimeoutError` naming `what`.

    Connection errors count as "not yet": a node may be down or loading while we wait.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (redis.ConnectionError, redis.TimeoutError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"Not {what} after {timeout} s.")
        time.sleep(0.05)


def admin(port: int) -> redis.Redis:
    return redis.Redis(HOST, port, decode_responses=True, socket_timeout=2)


def info(port: int, section: str) -> dict[str, Any]:
    with admin(port) as client:
        result: dict[str, Any] = client.info(section)
    return result


def replica_in_sync(port: int) -> bool:
    return info(port, "replication").get("master_link_status") == "up"


@dataclass
class SentinelServer(RedisServer):
    """`redis-server <config> --sentinel`: Sentinel insists on a config file it can rewrite."""

    config_file: Path | None = None

    def args(self) -> list[str]:
        binary, *options = super().args()
        return [binary, str(self.config_file), "--sentinel", *options]


class _Topology:
    """Owns the servers and every claimed port; `stop` stops them by PID and frees the ports."""

    def __init__(self, basedir: Path) -> None:
        self.basedir = basedir
        self._servers: list[RedisServer] = []
        self._ports: list[int] = []
        self._killed_at: dict[int, float] = {}

    def _port(self) -> int:
        port = claim_free_port()
        self._ports.append(port)
        return port

    def _datadir(self, name: str) -> Path:
        datadir = self.basedir / name
        datadir.mkdir(parents=True)
        return datadir

    def _kill(self, server: RedisServer) -> RedisServer:
        server.kill()
        self._killed_at[server.port] = time.monotonic()
        return server

    def client(self, port: int) -> redis.Redis:
        """An admin client (str responses) for the node or sentinel on `port`."""
        return admin(port)

    def server_at(self, port: int) -> RedisServer:
        return next(server for server in self._servers if server.port == port)

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
        for port in self._ports:
            release_port(port)
        self._ports.clear()


class SentinelTopology(_Topology):
    """A primary, one replica and three sentinels (quorum 2) monitoring them as `service`."""

    def __init__(self, basedir: Path, service: str = "elastic", sentinel_count: int = 3) -> None:
        super().__init__(basedir)
        self.service = service
        self.sentinel_count = sentinel_count
        self.data_servers: list[RedisServer] = []
        self.sentinel_servers: list[SentinelServer] = []
        self.killed: RedisServer | None = None

    @property
    def sentinels(self) -> list[Address]:
        return [(HOST, sentinel.port) for sentinel in self.sentinel_servers]

    def start(self) -> SentinelTopology:
        """Start everything; return once the replica is in sync and every sentinel sees it
        and the other sentinels (a failover needs both)."""
        try:
            primary = self._start_data_server("primary", replica_of=None)
            self._start_data_server("replica", replica_of=primary.port)
            for index in range(self.sentinel_count):
                self._start_sentinel(index, primary.port)
            wait_until(self._sentinels_ready, 20, "every sentinel sees the replica and peers")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_data_server(self, name: str, replica_of: int | None) -> RedisServer:
        server = RedisServer(datadir=self._datadir(name), port=self._port())
        self.data_servers.append(server)
        self._servers.append(server)
        return self._start_as_replica(server, replica_of)

    def _start_as_replica(self, server: RedisServer, replica_of: int | None) -> RedisServer:
        server.extra_args = list(FAST_SYNC)
        if replica_of is not None:
            server.extra_args += ["--replicaof", HOST, str(replica_of)]
        server.start()
        if replica_of is not None:
            wait_until(lambda: replica_in_sync(server.port), 10, f"{server.port} in sync")
        return server

    def _start_sentinel(self, index: int, primary_port: int) -> None:
        datadir = self._datadir(f"sentinel-{index}")
        config = datadir / "sentinel.conf"
        config.write_text(
            "sentinel resolve-hostnames no\n"
            f"sentinel announce-ip {HOST}\n"
            f"sentinel monitor {self.service} {HOST} {primary_port} 2\n"
            f"sentinel down-after-milliseconds {self.service} 1000\n"
            f"sentinel failover-timeout {self.service} 5000\n"
        )
        sentinel = SentinelServer(datadir=datadir, port=self._port(), config_file=config)
        self.sentinel_servers.append(sentinel)
        self._servers.append(sentinel)
        sentinel.start()

    def _sentinels_ready(self) -> bool:
        for _, port in self.sentinels:
            with admin(port) as client:
                state = client.sentinel_master(self.service)
                replicas = client.sentinel_slaves(self.service)
            in_sync = [
                r for r in replicas
                if r["is_slave"] and not r["is_sdown"] and r["master-link-status"] == "ok"
            ]  # fmt: skip
            if state["num-other-sentinels"] != self.sentinel_count - 1 or not in_sync:
                return False
        return True

    def _ask_sentinels(self) -> set[Address]:
        answers = set()
        for _, port in self.sentinels:
            with admin(port) as client:
                address = client.sentinel_get_master_addr_by_name(self.service)
            if address is not None:
                answers.add((str(address[0]), int(address[1])))
        return answers

    def primary_address(self) -> Address:
        """The primary's address, as the first sentinel that answers reports it."""
        for _, port in self.sentinels:
            try:
                with admin(port) as client:
                    address = client.sentinel_get_master_addr_by_name(self.service)
            except redis.ConnectionError:
                continue
            return str(address[0]), int(address[1])
        raise RuntimeError(f"No sentinel of {self.sentinels} answered.")

    def primary(self) -> RedisServer:
        return self.server_at(self.primary_address()[1])

    def replicas(self) -> list[RedisServer]:
        primary = self.primary()
        return [s for s in self.data_servers if s is not primary and s.process is not None]

    def kill_primary(self) -> RedisServer:
        """SIGKILL the current primary; return its server (stopped, ready for `restart`)."""
        self.killed = self._kill(self.primary())
        return self.killed

    def wait_for_failover(self, timeout: float = 15) -> tuple[Address, float]:
        """Wait until every sentinel names a new primary and that server says `role:master`.

        Return its address and the seconds since `kill_primary`; raise `TimeoutError` after
        `timeout` seconds.
        """
        if self.killed is None:
            raise RuntimeError("Call kill_primary() before wait_for_failover().")
        old = (HOST, self.killed.port)
        killed_at = self._killed_at[self.killed.port]

        def promoted() -> Address | None:
            answers = self._ask_sentinels()
            if len(answers) != 1:
                return None
            address = answers.pop()
            if address == old or info(address[1], "replication")["role"] != "master":
                return None
            return address

        address = wait_until(promoted, timeout, f"failed over from {old}")
        return address, time.monotonic() - killed_at

    def restart(self, server: RedisServer | None = None) -> RedisServer:
        """Start a killed server again (the last killed primary by default), as a replica of
        the current primary, and wait until it is in sync."""
        server = server or self.killed
        if server is None:
            raise RuntimeError("Nothing to restart: kill_primary() first.")
        self._start_as_replica(server, replica_of=self.primary_address()[1])
        if server is self.killed:
            self.killed = None
        return server


@dataclass(frozen=True)
class ClusterNodeView:
    """One line of `CLUSTER NODES`, as seen from some live node."""

    node_id: str
    port: int
    flags: frozenset[str]
    primary_id: str | None
    slots: int

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return "fail" in self.flags or "fail?" in self.flags


def cluster_info(port: int) -> dict[str, str]:
    """`CLUSTER INFO` of the node on `port`, as strings."""
    with admin(port) as client:
        text: str = client.execute_command("CLUSTER", "INFO")
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def parse_cluster_nodes(text: str) -> list[ClusterNodeView]:
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        node_id, address, flags, primary_id = fields[:4]
        slots = 0
        for spec in fields[8:]:
            if spec.startswith("["):  # a slot being migrated or imported
                continue
            first, _, last = spec.partition("-")
            slots += int(last or first) - int(first) + 1
        nodes.append(
            ClusterNodeView(
                node_id=node_id,
                port=int(address.split("@")[0].rsplit(":", 1)[1]),
                flags=frozenset(flags.split(",")),
                primary_id=None if primary_id == "-" else primary_id,
                slots=slots,
            )
        )
    return nodes


class ClusterTopology(_Topology):
    """Three primaries with one replica each, created by `redis-cli --cluster create`."""

    def __init__(self, basedir: Path, primaries: int = 3, replicas_per_primary: int = 1) -> None:
        super().__init__(basedir)
        self.primary_count = primaries
        self.replicas_per_primary = replicas_per_primary
        self.servers: list[RedisServer] = []
        self._failover_watch: dict[int, tuple[str, int]] = {}

    @property
    def seeds(self) -> list[Address]:
        return [(HOST, server.port) for server in self.servers]

    def start(self) -> ClusterTopology:
        """Start the nodes, create the cluster, and return once every live node reports
        `cluster_state:ok` with all 16384 slots, and every replica is in sync."""
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is missing: run `apt-get install redis-tools`.")
        try:
            for index in range(self.primary_count * (1 + self.replicas_per_primary)):
                self._start_node(index)
            created = subprocess.run(
                [cli, "--cluster", "create", *(f"{HOST}:{port}" for _, port in self.seeds),
                 "--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes"],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}")
            wait_until(self._healthy, 30, "a healthy cluster")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, index: int) -> None:
        datadir = self._datadir(f"node-{index}")
        server = RedisServer(datadir=datadir, port=self._port())
        # An explicit bus port: the default port+10000 may belong to someone else.
        server.extra_args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(datadir / "nodes.conf"),
            "--cluster-node-timeout", "1000",
            "--cluster-port", str(self._port()),
            "--appendonly", "no",
            *FAST_SYNC,
        ]  # fmt: skip
        self.servers.append(server)
        self._servers.append(server)
        server.start()

    def _live(self) -> list[RedisServer]:
        return [server for server in self.servers if server.process is not None]

    def nodes(self) -> list[ClusterNodeView]:
        """`CLUSTER NODES` as the first live node sees it."""
        with admin(self._live()[0].port) as client:
            return parse_cluster_nodes(client.execute_command("CLUSTER", "NODES"))

    def _healthy(self) -> bool:
        live = {server.port for server in self._live()}
        for port in live:
            state = cluster_info(port)
            if state["cluster_state"] != "ok" or state["cluster_slots_ok"] != str(CLUSTER_SLOTS):
                return False
            with admin(port) as client:
                view = parse_cluster_nodes(client.execute_command("CLUSTER", "NODES"))
            serving = [n for n in view if n.port in live and n.is_primary and n.slots]
            if len(serving) != self.primary_count:
                return False
            # Replication roles travel by gossip: until every node has heard them, some
            # view shows a replica as an empty primary and `replicas()` misses it.
            serving_ids = {n.node_id for n in serving}
            others = [n for n in view if n.port in live and n not in serving]
            if any(n.primary_id not in serving_ids for n in others):
                return False
        return all(replica_in_sync(server.port) for server in self.replicas())

    def cluster_info(self, port: int) -> dict[str, str]:
        return cluster_info(port)

    def slots_of(self, port: int) -> set[int]:
        """The slots the node on `port` serves, as it sees them itself."""
        with admin(port) as client:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        return {
            slot
            for first, last, (_, primary_port, *_), *_ in ranges
            if int(primary_port) == port
            for slot in range(first, last + 1)
        }

    def primaries(self) -> list[RedisServer]:
        """Live primaries that serve slots, by port."""
        ports = {n.port for n in self.nodes() if n.is_primary and n.slots and not n.failed}
        return [s for s in self._live() if s.port in ports]

    def replicas(self) -> list[RedisServer]:
        """Live replicas, by port."""
        ports = {n.port for n in self.nodes() if not n.is_primary and not n.failed}
        return [s for s in self._live() if s.port in ports]

    def replica_of(self, primary_port: int) -> RedisServer:
        nodes = self.nodes()
        primary_id = next(n.node_id for n in nodes if n.port == primary_port)
        port = next(n.port for n in nodes if n.primary_id == primary_id)
        return self.server_at(port)

    def kill_primary(self, index: int = 0) -> RedisServer:
        """SIGKILL `primaries()[index]`; return its (stopped) server."""
        primary = self.primaries()[index]
        nodes = {n.port: n for n in self.nodes()}
        replica = self.replica_of(primary.port)
        self._failover_watch[primary.port] = (
            nodes[replica.port].node_id,
            nodes[primary.port].slots,
        )
        return self._kill(primary)

    def wait_for_failover(self, old_primary_port: int, timeout: float = 15) -> float:
        """Wait until the killed primary's replica serves all its slots, as every live node
        sees it, with `cluster_state:ok` everywhere; return the seconds since the kill."""
        replica_id, slots = self._failover_watch[old_primary_port]

        def promoted() -> bool:
            for server in self._live():
                with admin(server.port) as client:
                    view = parse_cluster_nodes(client.execute_command("CLUSTER", "NODES"))
                if not any(n.node_id == replica_id and n.slots == slots for n in view):
                    return False
            return self._healthy()

        wait_until(promoted, timeout, f"failed over from {old_primary_port}")
        return time.monotonic() - self._killed_at[old_primary_port]


@pytest.fixture(scope="session")
def sentinel_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelTopology]:
    """One Sentinel topology for tests that do not break it."""
    topology = SentinelTopology(tmp_path_factory.mktemp("sentinel-shared")).start()
    yield topology
    topology.stop()


@pytest.fixture(scope="session")
def cluster_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterTopology]:
    """One Cluster for tests that do not break it."""
    topology = ClusterTopology(tmp_path_factory.mktemp("cluster-shared")).start()
    yield topology
    topology.stop()


@pytest.fixture
def make_sentinel(tmp_path: Path) -> Iterator[Callable[..., SentinelTopology]]:
    """Start private Sentinel topologies (to kill); all stopped afterwards."""
    started: list[SentinelTopology] = []

    def make(**options: Any) -> SentinelTopology:
        topology = SentinelTopology(tmp_path / f"sentinel-{len(started)}", **options)
        started.append(topology)
        return topology.start()

    yield make
    for topology in started:
        topology.stop()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., ClusterTopology]]:
    """Start private Clusters (to kill); all stopped afterwards."""
    started: list[ClusterTopology] = []

    def make(**options: Any) -> ClusterTopology:
        topology = ClusterTopology(tmp_path / f"cluster-{len(started)}", **options)
        started.append(topology)
        return topology.start()

    yield make
    for topology in started:
        topology.stop()
