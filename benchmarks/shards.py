"""Many client processes on one topology, and what each primary took meanwhile.

Used by ``python -m benchmarks.cluster``: N spawned workers (each its own Django,
client and sessions) run load + change + save for a few seconds, while the
parent reads ``INFO commandstats`` and ``INFO cpu`` of each primary before and
after.  Commands counted there include those a Lua script calls.
"""

from __future__ import annotations

import itertools
import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from . import shapes
from .cycles import CYCLES, Workload
from .engines import OURS, close_clients, load_engines
from .environment import configure_django
from .measure import RunSamples, warm_up

SINGLE = "1 server"
CLUSTER = "cluster"
# What the parent sends while it reads the counters (INFO on a new connection).
_ADMIN_COMMANDS = {"info", "client", "hello", "ping"}


def cluster_options(port: int) -> dict[str, Any]:
    return {"REDIS_URL": f"redis://127.0.0.1:{port}/0", "CLUSTER": True}


def node_client(port: int) -> redis.Redis:
    return redis.Redis("127.0.0.1", port, decode_responses=True)


@dataclass(frozen=True)
class Job:
    """What each worker process runs (pickled to it)."""

    port: int  # the server's, or any cluster node's
    cluster: bool
    database: str
    size: str
    sessions: int
    seconds: float

    @property
    def topology(self) -> str:
        return CLUSTER if self.cluster else SINGLE


def _hammer(job: Job, barrier: Any, results: Any) -> None:
    """One worker process: its own Django, client and sessions; load + change + save on
    them in turn, from the second barrier on, for ``job.seconds``."""
    try:
        configure_django(f"redis://127.0.0.1:{job.port}/0", Path(job.database))
        if job.cluster:
            from django.conf import settings

            from elastic_sessions.conf import elastic_settings

            settings.ELASTIC_SESSIONS = cluster_options(job.port)
            elastic_settings.clear_cache()
        from elastic_sessions.connection import get_client

        engine = load_engines((OURS,))[0]
        data = shapes.build(job.size)
        change = CYCLES["change"]
        workloads = [Workload(engine, change, data, get_client()) for _ in range(job.sessions)]
        for workload in workloads:
            warm_up(workload, 3)
        barrier.wait(timeout=120)  # ready: the parent reads the servers' counters
        barrier.wait(timeout=60)  # go
        latencies: list[int] = []
        clock = time.perf_counter_ns
        start = end = clock()
        deadline = start + int(job.seconds * 1e9)
        for workload in itertools.cycle(workloads):
            began = clock()
            workload.run()
            end = clock()
            latencies.append(end - began)
            if end > deadline:
                break
        results.put((len(latencies), (end - start) / 1e9, latencies))
        barrier.wait(timeout=60)  # done: the parent reads the counters again
        for workload in workloads:
            workload.close()
        close_clients()
    except BaseException:
        barrier.abort()
        raise


@dataclass(frozen=True)
class Node:
    port: int
    label: str
    commands: Counter[str]
    cpu_s: float


def _node_counters(port: int, label: str) -> Node:
    with node_client(port) as client:
        stats: dict[str, Any] = client.info("commandstats")
        cpu: dict[str, Any] = client.info("cpu")
    commands = Counter({
        name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()
        if name.removeprefix("cmdstat_").split("|")[0] not in _ADMIN_COMMANDS
    })  # fmt: skip
    return Node(port, label, commands, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]))


@dataclass(frozen=True)
class Aggregate:
    topology: str
    workers: int
    ops: int
    ops_per_second: float
    latencies: list[int]
    wall_s: float
    shards: list[Node]  # deltas over the run
    replicas_cpu_s: float


def hammer(job: Job, workers: int, shards: dict[int, str], replicas: list[int]) -> Aggregate:
    """``workers`` processes (spawned: each its own client) running ``job``; ``shards`` are
    the primaries to count commands on (port: label), ``replicas`` add their CPU."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers + 1)
    results = context.Queue()
    procs = [context.Process(target=_hammer, args=(job, barrier, results)) for _ in range(workers)]
    for proc in procs:
        proc.start()
    try:
        barrier.wait(timeout=180)
        before = [_node_counters(port, label) for port, label in shards.items()]
        replicas_before = sum(_node_counters(port, "").cpu_s for port in replicas)
        barrier.wait(timeout=60)
        started = time.perf_counter()
        done = [results.get(timeout=job.seconds + 60) for _ in procs]
        wall = time.perf_counter() - started
        after = [_node_counters(port, label) for port, label in shards.items()]
        replicas_cpu = sum(_node_counters(port, "").cpu_s for port in replicas) - replicas_before
        barrier.wait(timeout=60)
    except BaseException:
        barrier.abort()
        raise
    finally:
        for proc in procs:
            proc.join(60)
    if any(proc.exitcode for proc in procs):
        raise RuntimeError(f"A {job.topology} worker failed; its traceback is above.")
    deltas = [
        Node(b.port, b.label, a.commands - b.commands, a.cpu_s - b.cpu_s)
        for b, a in zip(before, after, strict=True)
    ]
    return Aggregate(
        job.topology, workers, sum(ops for ops, _, _ in done),
        sum(ops / elapsed for ops, elapsed, _ in done),
        [ns for _, _, latencies in done for ns in latencies], wall, deltas, replicas_cpu,
    )  # fmt: skip


def aggregate_table(found: list[Aggregate]) -> str:
    head = (
        f"{'workers':>7} {'topology':<9} {'ops/s total':>11} {'p50 µs':>7} {'p99 µs':>7}  "
        "per primary: commands/s, commands per op, CPU % of a core (holds)"
    )
    lines = [head, "-" * len(head)]
    for run in found:
        samples = RunSamples([run.latencies])
        lines.append(
            f"{run.workers:>7} {run.topology:<9} {run.ops_per_second:>11,.0f} "
            f"{samples.percentile_us(0.5):>7.0f} {samples.percentile_us(0.99):>7.0f}"
        )
        for shard in run.shards:
            calls = sum(shard.commands.values())
            top = ", ".join(
                f"{name} {n / run.ops:.2f}" for name, n in shard.commands.most_common(3)
            )
            lines.append(
                f"{'':>19}:{shard.port:<5} {calls / run.wall_s:>9,.0f}/s {calls / run.ops:>5.2f}/op"
                f" {100 * shard.cpu_s / run.wall_s:>4.0f}%  ({top}){shard.label}"
            )
        if run.topology == CLUSTER:
            lines.append(
                f"{'':>19}replicas together: {100 * run.replicas_cpu_s / run.wall_s:.0f}% of a core"
            )
    return "\n".join(lines)
