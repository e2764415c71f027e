"""``python -m benchmarks``: every engine, every cycle, every size, in one run."""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import sys
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import redis
from redis.utils import HIREDIS_AVAILABLE

from . import shapes
from .cycles import CYCLES, Workload
from .engines import DJANGO_DB, ENGINES, HYBRID, OURS, Engine, close_clients, load_engines
from .environment import SQLITE_PRAGMAS, configure_django, migrate, redis_server, scratch_database
from .measure import RunSamples, cpu_per_cycle, footprint, timed_run, trips_per_cycle, warm_up
from .outage import OUTAGE_CYCLES, BreakerOpen, breaker_open_table, measure_breaker_open
from .report import (
    LISTPACK_RAISED,
    LISTPACK_VALUE,
    OURS_LISTPACK,
    Memory,
    Result,
    memory_table,
    ratios,
    ratios_table,
    results_table,
    write_json,
)


def _choices(value: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    picked = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [part for part in picked if part not in allowed]
    if unknown or not picked:
        raise argparse.ArgumentTypeError(
            f"unknown {', '.join(unknown) or 'empty choice'}; choose from {', '.join(allowed)}"
        )
    return picked


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Compare Redis session engines per request cycle and session size.",
    )
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument(
        "--sizes",
        type=lambda v: _choices(v, shapes.SIZES),
        default=shapes.SIZES,
        help=f"comma-separated, from {','.join(shapes.SIZES)} (default: all)",
    )
    parser.add_argument(
        "--cycles",
        type=lambda v: _choices(v, tuple(CYCLES)),
        default=tuple(CYCLES),
        help=f"comma-separated, from {','.join(CYCLES)} (default: all)",
    )
    parser.add_argument(
        "--engines",
        type=lambda v: _choices(v, ENGINES),
        default=ENGINES,
        help=f"comma-separated, from {','.join(ENGINES)} (default: all)",
    )
    parser.add_argument(
        "--seconds", type=float, help="timed seconds per engine, cycle and size (default 1.5)"
    )
    parser.add_argument("--repeats", type=int, help="interleaved runs to split them into (10)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    quick = args.quick
    args.seconds = args.seconds or (0.06 if quick else 1.5)
    args.repeats = max(1, args.repeats or (2 if quick else 10))
    args.warmup = 5 if quick else 100
    args.rt_cycles = 3 if quick else 10
    args.cpu_seconds = 0.02 if quick else 0.25
    return args


def versions(server_info: dict[str, Any]) -> dict[str, str]:
    found = {
        "python": platform.python_version(),
        "redis-server": server_info["redis_version"],
        "sqlite": sqlite3.sqlite_version,
    }
    for dist in ("django", "redis", "hiredis", "django-redis", "django-redis-sessions"):
        found[dist] = version(dist)
    return found


def code_version() -> str:
    """The commit measured, and whether the package had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    # Figures quoted in notes must say when they were not taken on a commit.
    dirty = git("status", "--porcelain", "--", "elastic_sessions")
    return f"{commit} (elastic_sessions/ modified)" if dirty else commit


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with warnings.catch_warnings():
        # django-redis-sessions 0.6.2 calls SETEX, deprecated by redis-py 8; not ours to fix.
        warnings.filterwarnings(
            "ignore",
            message="Call to deprecated setex",
            category=DeprecationWarning,
            module=r"redis_sessions\.",
        )
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    labels = {name: cycle.label for name, cycle in CYCLES.items()}
    with redis_server() as server, scratch_database() as database:
        configure_django(server.url, database)
        migrate()
        engines = load_engines(args.engines)
        admin = server.client()
        meta: dict[str, Any] = {
            "versions": versions(admin.info("server")),
            "code": code_version(),
            "hiredis_parser": HIREDIS_AVAILABLE,
            "cpus": os.cpu_count(),
            "seconds_per_combination": args.seconds,
            "repeats": args.repeats,
            "warmup_ops": args.warmup,
            "engines": {engine.name: engine.label for engine in engines},
            "shapes": {size: shapes.describe(size) for size in args.sizes},
            "json_bytes": {size: shapes.json_size(shapes.build(size)) for size in args.sizes},
        }
        print(_preamble(meta, args), flush=True)
        results: list[Result] = []
        memory: list[Memory] = []
        outage: BreakerOpen | None = None
        outage_cycles = tuple(c for c in OUTAGE_CYCLES if c in args.cycles)
        try:
            for size in args.sizes:
                data = shapes.build(size)
                admin.flushdb()
                memory += _footprints(engines, data, size, admin)
                for cycle_name in args.cycles:
                    workloads = [Workload(e, CYCLES[cycle_name], data, admin) for e in engines]
                    results += measure_interleaved(workloads, size, args)
            if HYBRID in args.engines and outage_cycles:
                # Last, and on a server of its own: the one it kills.
                pair = {e.name: e for e in load_engines((HYBRID, DJANGO_DB))}
                outage = measure_breaker_open(pair, args.sizes, outage_cycles, args, admin)
        finally:
            close_clients()
            admin.close()
    found = ratios(results, memory)
    print("\n" + results_table(results, labels))
    print("\nRedis memory per session (MEMORY USAGE <key> SAMPLES 0, summed over its keys)\n")
    print(memory_table(memory, meta["json_bytes"]))
    if any(m.engine == OURS_LISTPACK for m in memory):
        print(
            f"{OURS_LISTPACK}: our hash again, on a server with {LISTPACK_VALUE} {LISTPACK_RAISED}"
            " (a server-wide setting, default 64; every timing above uses the default)."
        )
    index = next((m.other_bytes for m in memory if m.engine == OURS and m.other_bytes), 0)
    if index:
        print(
            f"Not counted above: our per-user index (a sorted set per user, not per session)"
            f" takes {index:,} B for a user with one session."
        )
    print(
        "Nor the admin's listing sets (es:ix:seen, es:ix:exp; LISTING_INDEX): about 250 B"
        " a session, measured by `python -m benchmarks.listing`."
    )
    print("\nRatios (printed, never asserted; ops/s ratio > 1 means ours is faster)\n")
    print(ratios_table(found, labels))
    if outage is not None:
        print(_outage_report(outage, labels))
    if args.json:
        extra = {"breaker_open": outage.as_json()} if outage is not None else {}
        write_json(args.json, meta, results, memory, found, extra=extra)
        print(f"\nWrote {args.json}")
    return 0


def _footprints(
    engines: list[Engine], data: dict[str, Any], size: str, admin: redis.Redis
) -> list[Memory]:
    found = []
    for engine in engines:
        if not engine.session_keys("any"):
            continue  # nothing in Redis (django-db): no row in the memory table
        use = footprint(Workload(engine, CYCLES["create"], data, admin))
        found.append(Memory(engine.name, size, use.bytes, use.encoding, use.keys, use.other_bytes))
        if engine.name == OURS:
            # What the server-wide hash-max-listpack-value does to our hash.
            default = str(admin.config_get(LISTPACK_VALUE)[LISTPACK_VALUE])
            admin.config_set(LISTPACK_VALUE, LISTPACK_RAISED)
            try:
                use = footprint(Workload(engine, CYCLES["create"], data, admin))
            finally:
                admin.config_set(LISTPACK_VALUE, default)
            found.append(Memory(OURS_LISTPACK, size, use.bytes, use.encoding, use.keys))
    return found


def measure_interleaved(
    workloads: list[Workload], size: str, args: argparse.Namespace
) -> list[Result]:
    """One ``Result`` per workload (keyed by engine name): warm-up, round trips and CPU
    per cycle, then ``args.repeats`` timed runs interleaved across the workloads."""
    cycle = workloads[0].cycle
    try:
        for workload in workloads:
            warm_up(workload, args.warmup)
        trips = {w.engine.name: trips_per_cycle(w, args.rt_cycles) for w in workloads}
        cpu = {w.engine.name: cpu_per_cycle(w, args.cpu_seconds) for w in workloads}
        samples = {w.engine.name: RunSamples([]) for w in workloads}
        per_run = args.seconds / args.repeats
        for rep in range(args.repeats):
            # Rotate the order, so no engine always runs right after another.
            shift = rep % len(workloads)
            for workload in workloads[shift:] + workloads[:shift]:
                samples[workload.engine.name].runs.append(timed_run(workload, per_run, 10**6))
    finally:
        for workload in workloads:
            workload.close()
    print(f"  measured {size:<5} {cycle.label}", file=sys.stderr, flush=True)
    return [
        Result(
            engine=name,
            cycle=cycle.name,
            size=size,
            ops_per_second=sample.median_ops_per_second(),
            spread_pct=sample.spread_pct(),
            p50_us=sample.percentile_us(0.50),
            p99_us=sample.percentile_us(0.99),
            round_trips=trips[name].redis,
            db_statements=trips[name].db,
            db_writes=trips[name].db_writes,
            client_cpu_us=cpu[name][0],
            server_cpu_us=cpu[name][1],
            runs_ops_per_second=sample.ops_per_second(),
            timed_ops=sample.count,
        )
        for name, sample in samples.items()
    ]


def _preamble(meta: dict[str, Any], args: argparse.Namespace) -> str:
    versions = ", ".join(f"{name} {v}" for name, v in meta["versions"].items())
    lines = [
        "django-elastic-sessions benchmarks"
        + (" (--quick: figures are rough)" if args.quick else ""),
        f"Code: {meta['code']}; versions: {versions}; hiredis parser: {meta['hiredis_parser']};"
        f" CPUs: {meta['cpus']}",
        "Engines:",
        *(f"  {name:<15} {label}" for name, label in meta["engines"].items()),
        "Session shapes (same data for every engine; JSON B = compact JSON of the whole dict):",
        *(
            f"  {size:<5} {meta['json_bytes'][size]:>6,} B: {meta['shapes'][size]}"
            for size in args.sizes
        ),
        "Method: one process, one client connection per engine, redis-server on loopback;",
        f"  SQLite {meta['versions']['sqlite']} in a temporary file ({SQLITE_PRAGMAS}),"
        " in process: its CPU counts as client CPU.",
        f"  Per engine, cycle and size: {args.warmup} warm-up cycles, then {args.repeats} runs"
        f" of {args.seconds / args.repeats:.2f} s, interleaved across engines (order rotated).",
        "  Each cycle is timed alone (perf_counter_ns); deleting what a create left is untimed.",
        "  ops/s = median over the runs of (cycles / summed cycle time); ±% = half the",
        "  interquartile range of the runs, in % of that median (machine noise). p50/p99 over",
        "  all timed cycles pooled. GC stays on (it is part of the cost); gc.collect() before",
        "  every run. Speed ratios = median over rounds of the ratio within a round.",
        f"  RT = Redis round trips per cycle (requests written: a command or a pipeline),"
        f" counted on {args.rt_cycles} separate untimed cycles;",
        "  DB = SQL statements per cycle (BEGIN/SAVEPOINT/RELEASE not counted), DBw = those"
        " that write, on the same cycles.",
        "  client / server = CPU µs per cycle of this process / of redis-server (INFO cpu),"
        f" over a separate untimed pass of {args.cpu_seconds} s.",
    ]
    return "\n".join(lines)


def _outage_report(outage: BreakerOpen, labels: dict[str, str]) -> str:
    probes = sum(n for what, n in outage.log_records.items() if "still unavailable" in what)
    lines = [
        "\nBreaker open: the hybrid engine's own redis-server killed (kill -9) after its"
        " sessions were cached,",
        "then one untimed request opened the breaker; django-db = the database-only path,"
        " same cycles, interleaved.",
        "",
        breaker_open_table(outage, labels),
        "",
        f"p99 ratio = hybrid p99 / django-db p99. Configured SOCKET_TIMEOUT"
        f" {outage.socket_timeout_s:g} s = {outage.socket_timeout_s * 1e6:,.0f} µs,"
        f" SOCKET_CONNECT_TIMEOUT {outage.socket_connect_timeout_s:g} s, RETRIES"
        f" {outage.retries}; the breaker probes Redis at most every"
        f" {outage.probe_interval_s:g} s ({probes} failed probes in the runs above).",
    ]
    others = {what: n for what, n in outage.log_records.items() if "still unavailable" not in what}
    if others:
        records = "; ".join(f"{n} x {what}" for what, n in others.items())
        lines.append(f"Other log records while open: {records}")
    return "\n".join(lines)
