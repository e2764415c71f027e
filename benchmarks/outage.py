"""The hybrid engine with its Redis killed, once the circuit breaker is open.

Issue 3: while the breaker is open, request latency must stay close to the
database-only path, not to the Redis socket timeout.  The hybrid engine gets a
redis-server of its own, which is ``kill -9``-ed after its sessions were
created and cached there; every other measurement keeps the shared server.
The breaker's probes (one every ``BREAKER_PROBE_INTERVAL``) fall inside the
timed runs, as they would in production.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import redis

from . import shapes
from .cycles import CYCLES, Workload
from .engines import DJANGO_DB, HYBRID, Engine
from .environment import redis_server
from .measure import RunSamples, timed_run, trips_per_cycle, warm_up
from .report import per_cycle

OUTAGE_CYCLES = ("change", "load")


@dataclass(frozen=True)
class OpenRow:
    engine: str
    cycle: str
    size: str
    ops_per_second: float
    spread_pct: float
    p50_us: float
    p99_us: float
    max_us: float
    redis_round_trips: float
    db_statements: float
    db_writes: float
    runs_ops_per_second: list[float]
    timed_ops: int


@dataclass(frozen=True)
class BreakerOpen:
    """The figures, and the settings that bound what a request could wait."""

    socket_timeout_s: float
    socket_connect_timeout_s: float
    probe_interval_s: float
    retries: int
    rows: list[OpenRow]
    # Log records of the package while the breaker was open: "LEVEL message" -> count.
    log_records: dict[str, int]

    def p99_ratio(self, cycle: str, size: str) -> float:
        """Hybrid p99 over django-db p99 on one cycle and size."""
        p99 = {(r.engine, r.cycle, r.size): r.p99_us for r in self.rows}
        return p99[HYBRID, cycle, size] / p99[DJANGO_DB, cycle, size]

    def as_json(self) -> dict[str, Any]:
        ratios = [
            {"cycle": r.cycle, "size": r.size, "p99_ratio": self.p99_ratio(r.cycle, r.size)}
            for r in self.rows
            if r.engine == HYBRID
        ]
        return {**asdict(self), "p99_ratios": ratios}


class _Tally(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.seen[f"{record.levelname} {record.msg}"] += 1


@contextmanager
def _tallied_logs() -> Iterator[_Tally]:
    """Count the package's log records instead of printing them mid-table.

    DEBUG is on so that failed probes (logged at DEBUG by the breaker) are counted;
    the package logs nothing at DEBUG on a request's normal path.
    """
    package = logging.getLogger("elastic_sessions")
    tally = _Tally()
    level, propagate = package.level, package.propagate
    package.addHandler(tally)
    package.setLevel(logging.DEBUG)
    package.propagate = False
    try:
        yield tally
    finally:
        package.removeHandler(tally)
        package.setLevel(level)
        package.propagate = propagate


def measure_breaker_open(
    engines: dict[str, Engine],
    sizes: tuple[str, ...],
    cycles: tuple[str, ...],
    args: argparse.Namespace,
    admin: redis.Redis,
) -> BreakerOpen:
    """Time ``cycles`` of the hybrid engine, its Redis killed, against django-db.

    ``admin`` is the shared server's client: the workloads' untimed upkeep goes
    there (the killed server's keys died with it; rows go through the engine).
    """
    from django.test.utils import override_settings

    from elastic_sessions.breaker import BreakerState, breaker_for
    from elastic_sessions.conf import elastic_settings

    hybrid, django_db = engines[HYBRID], engines[DJANGO_DB]
    with (
        redis_server() as doomed,
        override_settings(ELASTIC_SESSIONS={"REDIS_URL": doomed.url}),
        _tallied_logs() as tally,
    ):
        # Sessions created, and copied to Redis, before the crash: users signed in.
        pairs = [
            (size, [Workload(e, CYCLES[cycle], data, admin) for e in (hybrid, django_db)])
            for size in sizes
            for data in [shapes.build(size)]
            for cycle in cycles
        ]
        rows: list[OpenRow] = []
        try:
            # Requests served from Redis before the crash, so the kill breaks live
            # pooled connections, as it would on a busy site.
            for _, pair in pairs:
                warm_up(pair[0], 10)
            doomed.kill()
            # The request that finds Redis gone and opens the breaker: not timed.
            pairs[0][1][0].run()
            breaker = breaker_for("redis")
            if breaker.state is not BreakerState.OPEN:
                raise RuntimeError(f"the breaker did not open after kill -9: {breaker!r}")
            tally.seen.clear()  # the outage's one WARNING is expected; count what follows
            for size, pair in pairs:
                rows += _measure_pair(size, pair, args)
        finally:
            for _, pair in pairs:
                for workload in pair:
                    workload.close()
        return BreakerOpen(
            socket_timeout_s=elastic_settings.SOCKET_TIMEOUT,
            socket_connect_timeout_s=elastic_settings.SOCKET_CONNECT_TIMEOUT,
            probe_interval_s=elastic_settings.BREAKER_PROBE_INTERVAL,
            retries=elastic_settings.RETRIES,
            rows=rows,
            log_records=dict(tally.seen),
        )


def _measure_pair(size: str, pair: list[Workload], args: argparse.Namespace) -> list[OpenRow]:
    for workload in pair:
        warm_up(workload, args.warmup)
    trips = {w.engine.name: trips_per_cycle(w, args.rt_cycles) for w in pair}
    samples = {w.engine.name: RunSamples([]) for w in pair}
    per_run = args.seconds / args.repeats
    for rep in range(args.repeats):
        shift = rep % len(pair)
        for workload in pair[shift:] + pair[:shift]:
            samples[workload.engine.name].runs.append(timed_run(workload, per_run, 10**6))
    cycle = pair[0].cycle
    print(f"  measured {size:<5} {cycle.label} (breaker open)", file=sys.stderr, flush=True)
    return [
        OpenRow(
            engine=name,
            cycle=cycle.name,
            size=size,
            ops_per_second=sample.median_ops_per_second(),
            spread_pct=sample.spread_pct(),
            p50_us=sample.percentile_us(0.50),
            p99_us=sample.percentile_us(0.99),
            max_us=sample.percentile_us(1.0),
            redis_round_trips=trips[name].redis,
            db_statements=trips[name].db,
            db_writes=trips[name].db_writes,
            runs_ops_per_second=sample.ops_per_second(),
            timed_ops=sample.count,
        )
        for name, sample in samples.items()
    ]


def breaker_open_table(found: BreakerOpen, labels: dict[str, str]) -> str:
    head = f"{'size':<5} {'cycle':<32} {'engine':<10} {'ops/s':>8} {'±%':>4} {'p50 µs':>8} "
    head += f"{'p99 µs':>8} {'max µs':>9} {'RT':>3} {'DB':>4} {'DBw':>4} {'p99 ratio':>9}"
    lines = [head, "-" * len(head)]
    previous = None
    for r in found.rows:
        if previous is not None and (r.size, r.cycle) != previous:
            lines.append("")
        previous = (r.size, r.cycle)
        ratio = f"{found.p99_ratio(r.cycle, r.size):>8.2f}x" if r.engine == HYBRID else ""
        lines.append(
            f"{r.size:<5} {labels[r.cycle]:<32} {r.engine:<10} {r.ops_per_second:>8,.0f} "
            f"{r.spread_pct:>4.0f} {r.p50_us:>8.1f} {r.p99_us:>8.1f} {r.max_us:>9.1f} "
            f"{per_cycle(r.redis_round_trips):>3} {per_cycle(r.db_statements):>4} "
            f"{per_cycle(r.db_writes):>4} {ratio:>9}"
        )
    return "\n".join(lines)
