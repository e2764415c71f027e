"""Timing, round-trip counting and Redis memory of one workload."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
import redis.connection

from .cycles import Workload


@dataclass
class RunSamples:
    """Per-operation latencies (ns) of the timed runs of one workload."""

    runs: list[list[int]]

    def ops_per_second(self) -> list[float]:
        return [len(run) * 1e9 / sum(run) for run in self.runs if run]

    def median_ops_per_second(self) -> float:
        return statistics.median(self.ops_per_second())

    def spread_pct(self) -> float:
        """Half the interquartile range of the runs' ops/s, in % of their median."""
        speeds = self.ops_per_second()
        if len(speeds) < 2:
            return 0.0
        low, _, high = statistics.quantiles(speeds, n=4)
        return 50 * (high - low) / statistics.median(speeds)

    def percentile_us(self, fraction: float) -> float:
        pooled = sorted(ns for run in self.runs for ns in run)
        index = min(len(pooled) - 1, int(fraction * len(pooled)))
        return pooled[index] / 1000

    @property
    def count(self) -> int:
        return sum(len(run) for run in self.runs)


def timed_run(workload: Workload, seconds: float, max_ops: int) -> list[int]:
    """Run the cycle for ``seconds`` (or ``max_ops``); each op timed on its own.

    Upkeep between ops (deleting what a create left behind) is not timed.
    """
    gc.collect()
    latencies: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    run, after = workload.run, workload.after
    while len(latencies) < max_ops:
        start = clock()
        key = run()
        end = clock()
        latencies.append(end - start)
        after(key)
        if end > deadline:
            break
    return latencies


def warm_up(workload: Workload, ops: int) -> None:
    for _ in range(ops):
        workload.after(workload.run())


class _Counter:
    count = 0


@contextmanager
def counting_round_trips() -> Iterator[_Counter]:
    """Count requests written by any redis-py client: one command or one pipeline each."""
    counter = _Counter()
    original = redis.connection.AbstractConnection.send_packed_command

    def send(self: Any, command: Any, check_health: bool = True) -> None:
        counter.count += 1
        original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        redis.connection.AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


@dataclass(frozen=True)
class Trips:
    """Mean requests of one cycle: to Redis, and SQL statements to the database."""

    redis: float
    db: float
    db_writes: float


# Transaction control is left out of the database counts: Django logs SQLite's
# BEGIN but not PostgreSQL's, and savepoints are bookkeeping, not work.
_TRANSACTION_CONTROL = ("BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "COMMIT")
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _statements(queries: list[dict[str, str]]) -> tuple[int, int]:
    """How many data statements, and how many of them wrote."""
    verbs = [query["sql"].lstrip().split(None, 1)[0].upper() for query in queries]
    data = [verb for verb in verbs if verb not in _TRANSACTION_CONTROL]
    return len(data), sum(verb in _WRITES for verb in data)


def trips_per_cycle(workload: Workload, cycles: int = 10) -> Trips:
    """Mean round trips of one cycle (checking each cycle's outcome on the way).

    Database statements are captured through Django's debug cursor, which this
    untimed pass turns on: the timed runs never pay for the logging.
    """
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    redis_total = db_total = writes_total = 0
    for _ in range(cycles):
        with counting_round_trips() as counter, CaptureQueriesContext(connection) as queries:
            key = workload.run()
        redis_total += counter.count
        statements, writes = _statements(queries.captured_queries)
        db_total += statements
        writes_total += writes
        workload.check(key)
        workload.after(key)
    return Trips(redis_total / cycles, db_total / cycles, writes_total / cycles)


def cpu_per_cycle(workload: Workload, seconds: float) -> tuple[float, float]:
    """Client and server CPU µs per cycle, over an untimed pass of ``seconds``.

    The client's is this process's CPU time; the server's is redis-server's own
    ``used_cpu_user + used_cpu_sys`` (command execution, Lua and socket I/O).
    Upkeep after creates runs after the pass, outside both.
    """
    gc.collect()
    keys: list[str | None] = []
    server_before = _server_cpu(workload.admin)
    client_before = time.process_time()
    deadline = time.perf_counter() + seconds
    while True:
        keys.append(workload.run())
        if time.perf_counter() > deadline:
            break
    client = time.process_time() - client_before
    server = _server_cpu(workload.admin) - server_before
    for key in keys:
        workload.after(key)
    return client * 1e6 / len(keys), server * 1e6 / len(keys)


def _server_cpu(admin: redis.Redis) -> float:
    info = admin.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@dataclass(frozen=True)
class Footprint:
    bytes: int
    encoding: str
    keys: list[str]
    # Bytes of the other keys a session creates (our per-user index), not in ``bytes``.
    other_bytes: int


def footprint(workload: Workload) -> Footprint:
    """``MEMORY USAGE ... SAMPLES 0`` of the keys one freshly created session occupies."""
    admin = workload.admin
    key = workload.create_session()
    names = workload.engine.session_keys(key)
    others = [name for name in workload.engine.leftovers(key) if name not in names]
    try:
        used = sum(int(admin.memory_usage(name, samples=0) or 0) for name in names)
        other = sum(int(admin.memory_usage(name, samples=0) or 0) for name in others)
        raw_encoding: Any = admin.object("encoding", names[0])
        encoding = raw_encoding.decode() if isinstance(raw_encoding, bytes) else str(raw_encoding)
    finally:
        workload.engine.discard(admin, key)
    return Footprint(used, encoding, names, other)
