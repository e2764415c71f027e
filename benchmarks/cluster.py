"""The Redis engines on one redis-server and on a 3-primary Redis Cluster (issue 7).

    python -m benchmarks.cluster [--quick] [--sizes 200B,4KB] [--workers 2,4]

Starts one standalone redis-server and one cluster (three primaries, one replica
each, ``tests.redis_topologies``) on loopback, then prints three things:

- one client process, the request cycles of ``python -m benchmarks`` on each
  topology, interleaved, with requests written per cycle on each node;
- N worker processes hammering load + change + save on each topology, with the
  commands and CPU each primary took (what spreads over the shards);
- Redis bytes per session on the cluster (the sizing figures of docs/scaling.md).

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis
import redis.cluster
import redis.connection
from redis.utils import HIREDIS_AVAILABLE

from tests.redis_topologies import ClusterTopology

from . import shapes
from .cli import code_version, versions
from .cycles import CYCLES, Workload
from .engines import HYBRID, OURS, Engine, SessionLike, close_clients, load_engines
from .environment import configure_django, migrate, redis_server, scratch_database
from .measure import RunSamples, footprint, timed_run, warm_up
from .report import paired_ratio
from .shards import (
    CLUSTER,
    SINGLE,
    Aggregate,
    Job,
    aggregate_table,
    cluster_options,
    hammer,
    node_client,
)


class _Clients:
    """Both topologies' engine clients, built by the package itself; ``use`` makes one the
    process-wide client (swapped in place: ``reset_clients`` would drop the pool, and the
    next cycle would pay for new connections and a new slot map)."""

    def __init__(self, cluster_port: int) -> None:
        from django.conf import settings

        from elastic_sessions import connection
        from elastic_sessions.conf import elastic_settings

        self._connection = connection
        single = connection.get_client()
        connection._sync_client = None
        settings.ELASTIC_SESSIONS = cluster_options(cluster_port)
        elastic_settings.clear_cache()
        self.by_topology = {SINGLE: single, CLUSTER: connection.get_client()}

    def use(self, topology: str) -> None:
        self._connection._sync_client = self.by_topology[topology]

    def close(self) -> None:
        for client in self.by_topology.values():
            self._connection._sync_client = client
            self._connection.reset_clients()


def _on(engine: Engine, topology: str, clients: _Clients) -> Engine:
    def store(key: str | None) -> SessionLike:
        clients.use(topology)
        return engine.store(key)

    return replace(engine, name=f"{engine.name} {topology}", store=store)


@dataclass
class _Sent:
    per_port: Counter[int]
    getkeys: int = 0


# redis-py's ClusterPipeline asks a node for the keys of each EVAL it queues (COMMAND
# GETKEYS, with the script's source) before routing it: a request of its own.
_GETKEYS = b"COMMAND\r\n$7\r\nGETKEYS"


@contextmanager
def _requests_per_port() -> Iterator[_Sent]:
    """Requests written by any redis-py connection (a command or a pipeline), per server port."""
    sent = _Sent(Counter())
    original = redis.connection.AbstractConnection.send_packed_command

    def send(self: Any, command: Any, check_health: bool = True) -> None:
        sent.per_port[getattr(self, "port", 0)] += 1
        chunks = [command] if isinstance(command, (bytes, str)) else command
        head = chunks[0][:40] if chunks else b""
        sent.getkeys += _GETKEYS in (head.encode() if isinstance(head, str) else bytes(head))
        original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        redis.connection.AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


@dataclass(frozen=True)
class Trips:
    """Mean requests per cycle: on the session's own node first, then on each other node
    it touched, most first; and how many of them were COMMAND GETKEYS."""

    per_node: tuple[float, ...]
    getkeys: float

    def __str__(self) -> str:
        parts = [f"{n:.1f}".removesuffix(".0") for n in self.per_node]
        text = f"{sum(self.per_node):.1f}".removesuffix(".0")
        if len(parts) > 1:
            text += f" = {'+'.join(parts)}"
        if self.getkeys:
            text += f" ({self.getkeys:.1f}".removesuffix(".0") + " GETKEYS)"
        return text


def _trips(workload: Workload, cycles: int, home: Callable[[str], int]) -> Trips:
    """Requests per cycle, per node (checking each cycle's outcome on the way)."""
    rows, getkeys = [], 0
    for _ in range(cycles):
        with _requests_per_port() as sent:
            key = workload.run()
        assert key is not None
        own = sent.per_port.pop(home(workload.engine.session_keys(key)[0]), 0)
        rows.append([own, *sorted(sent.per_port.values(), reverse=True)])
        getkeys += sent.getkeys
        workload.check(key)
        workload.after(key)
    width = max(len(row) for row in rows)
    per_node = tuple(statistics.mean((*row, 0, 0, 0)[i] for row in rows) for i in range(width))
    return Trips(per_node, getkeys / cycles)


@dataclass(frozen=True)
class Timed:
    samples: RunSamples
    trips: Trips


def _measure(
    workloads: dict[str, Workload], homes: dict[str, Callable[[str], int]], args: argparse.Namespace
) -> dict[str, Timed]:
    """Warm-up, requests per node, then ``args.repeats`` runs interleaved across topologies."""
    try:
        for workload in workloads.values():
            warm_up(workload, args.warmup)
        trips = {t: _trips(w, args.rt_cycles, homes[t]) for t, w in workloads.items()}
        runs: dict[str, list[list[int]]] = {t: [] for t in workloads}
        order = list(workloads)
        for rep in range(args.repeats):
            for topology in order[rep % 2 :] + order[: rep % 2]:
                per_run = args.seconds / args.repeats
                runs[topology].append(timed_run(workloads[topology], per_run, 10**6))
    finally:
        for workload in workloads.values():
            workload.close()
    return {t: Timed(RunSamples(runs[t]), trips[t]) for t in workloads}


def cycles_table(rows: list[tuple[str, str, str, dict[str, Timed]]]) -> str:
    head = (
        f"{'size':<5} {'engine':<8} {'cycle':<44} {'ops/s 1 srv':>11} {'±%':>3} "
        f"{'ops/s cluster':>13} {'±%':>3} {'cl/1':>5} {'p50 1':>6} {'p50 cl':>6} "
        f"{'p99 1':>6} {'p99 cl':>6} {'RT 1':>4}  RT cluster"
    )
    lines = [head, "-" * len(head)]
    for size, engine, cycle, found in rows:
        one, cl = found[SINGLE].samples, found[CLUSTER].samples
        ratio = paired_ratio(cl.ops_per_second(), one.ops_per_second())
        lines.append(
            f"{size:<5} {engine:<8} {CYCLES[cycle].label:<44} "
            f"{one.median_ops_per_second():>11,.0f} {one.spread_pct():>3.0f} "
            f"{cl.median_ops_per_second():>13,.0f} {cl.spread_pct():>3.0f} {ratio:>5.2f} "
            f"{one.percentile_us(0.5):>6.0f} {cl.percentile_us(0.5):>6.0f} "
            f"{one.percentile_us(0.99):>6.0f} {cl.percentile_us(0.99):>6.0f} "
            f"{found[SINGLE].trips!s:>4}  {found[CLUSTER].trips}"
        )
    return "\n".join(lines)


# Not the data: the replication stream fills a backlog of up to 1 MB per primary as
# writes go by, and client and cluster-bus buffers come and go.
_BUFFERS = ("mem_total_replication_buffers", "mem_clients_normal", "mem_cluster_links")


def _used_memory(ports: list[int]) -> int:
    """``used_memory`` less buffers, summed over ``ports``."""
    total = 0
    for port in ports:
        with node_client(port) as client:
            memory = client.info("memory")
        total += int(memory["used_memory"]) - sum(int(memory.get(name, 0)) for name in _BUFFERS)
    return total


def _flush(ports: list[int]) -> None:
    for port in ports:
        with node_client(port) as client:
            client.flushall()


@dataclass(frozen=True)
class Sizing:
    session: int  # MEMORY USAGE of the session hash
    encoding: str
    user_index: int  # of a user with one session
    seen: float  # each listing set, per session, at ``count`` sessions
    expiring: float
    used: float  # used_memory delta per session, all primaries
    count: int


def sizing(
    engine: Engine, data: dict[str, Any], admin: redis.Redis, primaries: list[int], count: int
) -> Sizing:
    """Redis bytes of one new session, then of ``count`` new sessions of as many users (the
    listing sets' share and ``used_memory`` per session); the primaries are flushed around it."""
    from elastic_sessions.keys import listing_redis_keys

    _flush(primaries)
    one = footprint(Workload(engine, CYCLES["create"], data, admin))
    _flush(primaries)
    before = _used_memory(primaries)
    workload = Workload(engine, CYCLES["create"], data, admin)
    for user in range(count):
        workload.data = {**data, shapes.READ_KEY: str(user)}
        workload.create_session()
    used = _used_memory(primaries) - before
    seen, expiring = (int(admin.memory_usage(k, samples=0) or 0) for k in listing_redis_keys())
    _flush(primaries)
    return Sizing(
        one.bytes, one.encoding, one.other_bytes, seen / count, expiring / count, used / count,
        count,
    )  # fmt: skip


def sizing_table(found: dict[str, Sizing]) -> str:
    head = (
        f"{'size':<5} {'JSON B':>7} {'hash B':>7} {'encoding':<9} {'user index B':>12} "
        f"{'ix:seen B':>9} {'ix:exp B':>8} {'used_memory B':>13}"
    )
    lines = [head, "-" * len(head)]
    for size, s in found.items():
        lines.append(
            f"{size:<5} {shapes.json_size(shapes.build(size)):>7,} {s.session:>7,} "
            f"{s.encoding:<9} {s.user_index:>12,} {s.seen:>9.0f} {s.expiring:>8.0f} "
            f"{s.used:>13,.0f}"
        )
    return "\n".join(lines)


def _sizes(value: str) -> tuple[str, ...]:
    picked = tuple(part.strip() for part in value.split(",") if part.strip())
    if not picked or any(size not in shapes.SIZES for size in picked):
        raise argparse.ArgumentTypeError(f"choose from {','.join(shapes.SIZES)}")
    return picked


def _counts(value: str) -> tuple[int, ...]:
    try:
        picked = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        picked = ()
    if not picked or min(picked) < 1:
        raise argparse.ArgumentTypeError("comma-separated worker counts, each 1 or more")
    return picked


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster",
        description="The Redis engines on one redis-server and on a 3-primary Redis Cluster.",
    )
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument(
        "--sizes", type=_sizes, default=("200B", "4KB"), help="comma-separated (200B,4KB)"
    )
    parser.add_argument("--workers", type=_counts, help="worker processes per run (2,4)")
    parser.add_argument("--seconds", type=float, help="timed seconds per cycle and topology (1.5)")
    parser.add_argument("--repeats", type=int, help="interleaved runs to split them into (10)")
    parser.add_argument("--hammer-seconds", type=float, help="seconds per worker run (5)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.seconds = args.seconds or (0.06 if quick else 1.5)
    args.repeats = max(1, args.repeats or (2 if quick else 10))
    args.warmup = 5 if quick else 100
    args.rt_cycles = 3 if quick else 10
    args.workers = args.workers or ((2,) if quick else (2, 4))
    args.hammer_seconds = args.hammer_seconds or (0.5 if quick else 5.0)
    args.hammer_size = args.sizes[0]
    args.sessions_per_worker = 8 if quick else 64
    args.sizing_sessions = 100 if quick else 2000
    return args


@contextmanager
def _cluster() -> Iterator[ClusterTopology]:
    basedir = Path(tempfile.mkdtemp(prefix="elastic-sessions-bench-cluster-"))
    topology = ClusterTopology(basedir)
    try:
        yield topology.start()
    finally:
        topology.stop()
        shutil.rmtree(basedir, ignore_errors=True)


def _preamble(args: argparse.Namespace, server_info: dict[str, Any]) -> str:
    listed = ", ".join(f"{name} {v}" for name, v in versions(server_info).items())
    return "\n".join(
        [
            "django-elastic-sessions benchmarks: one redis-server vs a Redis Cluster"
            " (3 primaries, 1 replica each)"
            + (" (--quick: figures are rough)" if args.quick else ""),
            f"Code: {code_version()}; versions: {listed}; hiredis parser: {HIREDIS_AVAILABLE};"
            f" CPUs: {os.cpu_count()}",
            "Method: every server on loopback on this machine; the cluster client is the"
            " package's own (CLUSTER: True), as is the single server's.",
            f"  One client: as `python -m benchmarks`, per engine, cycle and size {args.warmup}"
            f" warm-up cycles, then {args.repeats} runs of {args.seconds / args.repeats:.2f} s per"
            " topology, interleaved;",
            "  ops/s = median over the runs; ±% = half their interquartile range; cl/1 = median"
            " over rounds of cluster / 1 server (< 1: the cluster is slower); p50/p99 in µs.",
            f"  RT = requests written per cycle (a command or a pipeline), over {args.rt_cycles}"
            " untimed cycles; on the cluster, total = the session's own node + each other node.",
        ]
    )


@dataclass
class Found:
    rows: list[tuple[str, str, str, dict[str, Timed]]]
    sizing: dict[str, Sizing]
    aggregates: list[Aggregate]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    found = Found([], {}, [])
    with redis_server() as server, _cluster() as cluster, scratch_database() as database:
        configure_django(server.url, database)
        migrate()
        seed = cluster.servers[0].port
        single, cluster_admin = server.client(), redis.cluster.RedisCluster("127.0.0.1", seed)
        print(_preamble(args, single.info("server")), flush=True)
        clients = _Clients(seed)
        try:
            _one_client(args, found, {SINGLE: single, CLUSTER: cluster_admin}, clients)
            primaries = _primaries(cluster, cluster_admin)
            replicas = [s.port for s in cluster.replicas()]
            for workers in args.workers:
                for job, shards in (
                    (_job(args, server.port, False, database), {server.port: ""}),
                    (_job(args, seed, True, database), primaries),
                ):
                    spread = hammer(job, workers, shards, replicas if job.cluster else [])
                    found.aggregates.append(spread)
                print(f"  hammered with {workers} workers", file=sys.stderr, flush=True)
        finally:
            clients.close()
            close_clients()
            single.close()
            cluster_admin.close()
    _report(args, found)
    return 0


def _job(args: argparse.Namespace, port: int, cluster: bool, database: Path) -> Job:
    return Job(
        port, cluster, str(database), args.hammer_size, args.sessions_per_worker,
        args.hammer_seconds,
    )  # fmt: skip


def _primaries(cluster: ClusterTopology, admin: Any) -> dict[int, str]:
    """The cluster's primaries by port, each labelled with the listing sets it holds."""
    from elastic_sessions.keys import listing_redis_keys

    found = {server.port: "" for server in cluster.primaries()}
    for name in listing_redis_keys():
        found[int(admin.get_node_from_key(name).port)] += f" {name}"
    return found


def _one_client(
    args: argparse.Namespace, found: Found, admins: dict[str, Any], clients: _Clients
) -> None:
    engines = load_engines((OURS, HYBRID))
    homes: dict[str, Callable[[str], int]] = {
        SINGLE: lambda key: int(admins[SINGLE].connection_pool.connection_kwargs["port"]),
        CLUSTER: lambda key: int(admins[CLUSTER].get_node_from_key(key).port),
    }
    primaries = [server.port for server in admins[CLUSTER].get_primaries()]
    for size in args.sizes:
        data = shapes.build(size)
        ours = _on(engines[0], CLUSTER, clients)
        found.sizing[size] = sizing(ours, data, admins[CLUSTER], primaries, args.sizing_sessions)
        for engine in engines:
            on = {t: _on(engine, t, clients) for t in (SINGLE, CLUSTER)}
            for cycle in CYCLES:
                workloads = {t: Workload(on[t], CYCLES[cycle], data, admins[t]) for t in on}
                found.rows.append((size, engine.name, cycle, _measure(workloads, homes, args)))
                print(f"  measured {size:<5} {engine.name:<8} {cycle}", file=sys.stderr, flush=True)


def _report(args: argparse.Namespace, found: Found) -> None:
    rows, aggregates = found.rows, found.aggregates
    print("\n" + cycles_table(rows))
    print(
        "RT cluster: total = requests to the session's own node + to each other node the cycle"
        " wrote to (the user index's, the listing sets', and the node redis-py asks COMMAND"
        " GETKEYS: its default node), per cycle."
    )
    print(
        f"\nMany clients: N worker processes (spawned, each its own client), load + change + save"
        f" of {args.hammer_size} sessions, {args.sessions_per_worker} per worker in turn,"
        f" {args.hammer_seconds:g} s;"
    )
    print(
        "ops/s total = sum over the workers; p50/p99 over every cycle; per primary = INFO"
        " commandstats and INFO cpu deltas over the run; commands include those a script runs"
        " (in brackets: the 3 most called, per op).\n"
    )
    print(aggregate_table(aggregates))
    print(
        f"This machine has {os.cpu_count()} CPUs for the workers and every redis-server (the"
        " cluster runs 3 primaries and 3 replicas; the single server has no replica), so it"
        " cannot show what a cluster adds, which is more machines: read the per-primary split,"
        " how the same work spreads over the shards."
    )
    print(
        "\nRedis memory per session on the cluster (MEMORY USAGE <key> SAMPLES 0, a new"
        " session; used_memory summed over the primaries)\n"
    )
    print(sizing_table(found.sizing))
    count = next(iter(found.sizing.values())).count
    print(
        f"hash B = the session's hash; user index B = the sorted set of a user with one session;"
        f" ix:seen / ix:exp B = each listing set's MEMORY USAGE over {count:,} sessions, per"
        " session (LISTING_INDEX);"
    )
    print(
        f"used_memory B = the primaries' used_memory growth (less replication, client and bus"
        f" buffers) over those {count:,} sessions, each of a different user (one user index"
        " each), per session: everything a session costs, Redis's per-key overhead included."
    )


if __name__ == "__main__":
    sys.exit(main())
