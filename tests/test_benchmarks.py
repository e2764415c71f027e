"""The benchmark runs end to end; its deterministic figures hold.

Timings are printed by ``./dev bench`` and quoted in notes, never asserted here:
only what cannot vary between runs is checked (round trips per cycle, bytes
per session, that every engine really did its cycle).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENGINES = {
    "elastic",
    "hybrid",
    "django-cache",
    "cached-db",
    "django-db",
    "redis-sessions",
    "raw-floor",
}
CYCLES = {"create", "change", "unchanged", "load"}
SIZES = ("200B", "4KB")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--sizes", "200B,4KB", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_every_engine_runs_every_cycle(quick_run):
    """Each (engine, cycle, size) has timed cycles (each checked by the benchmark first)."""
    _, payload = quick_run
    seen = {(r["engine"], r["cycle"], r["size"]) for r in payload["results"]}
    assert seen == {(e, c, s) for e in ENGINES for c in CYCLES for s in SIZES}
    assert all(r["timed_ops"] > 0 and r["ops_per_second"] > 0 for r in payload["results"])


def test_round_trips_per_cycle(quick_run):
    """Ours: load 1 (touch included), a change 1 more, an unchanged request none more."""
    _, payload = quick_run
    trips = {(r["engine"], r["cycle"], r["size"]): r["round_trips"] for r in payload["results"]}
    for size in SIZES:
        assert trips["elastic", "load", size] == 1
        assert trips["elastic", "unchanged", size] == 1
        assert trips["elastic", "change", size] == 2
        assert trips["elastic", "create", size] == 1
        # What the issue says of Django's cache engine, measured the same way.
        assert trips["django-cache", "change", size] == 3
        assert trips["django-cache", "unchanged", size] == 3


def test_database_statements_per_cycle(quick_run):
    """Hybrid: an unchanged request and a load write nothing to the database; a change
    and a create do.  Django's engines: one write per save, none for Redis-only engines."""
    _, payload = quick_run
    by_key = {(r["engine"], r["cycle"], r["size"]): r for r in payload["results"]}
    for size in SIZES:
        # The hybrid engine reads the database now and then (reconciling its
        # Redis copies), so only its writes are deterministic.
        assert by_key["hybrid", "unchanged", size]["db_writes"] == 0
        assert by_key["hybrid", "load", size]["db_writes"] == 0
        assert by_key["hybrid", "change", size]["db_writes"] >= 1
        assert by_key["hybrid", "create", size]["db_writes"] >= 1
        # Served from Redis: one round trip, as for the Redis engine.
        assert by_key["hybrid", "unchanged", size]["round_trips"] == 1
        assert by_key["hybrid", "load", size]["round_trips"] == 1
        for cycle in ("change", "unchanged"):
            assert by_key["cached-db", cycle, size]["db_writes"] == 1
            assert by_key["django-db", cycle, size]["db_statements"] == 2  # SELECT, UPDATE
            assert by_key["django-db", cycle, size]["db_writes"] == 1
        assert by_key["django-db", "load", size]["db_statements"] == 1
        assert by_key["django-db", "load", size]["round_trips"] == 0
        for cycle in CYCLES:
            assert by_key["elastic", cycle, size]["db_statements"] == 0


def test_breaker_open_section(quick_run):
    """With its Redis killed, the hybrid engine's change and load cycles ran from the
    database next to django-db, with finite latencies and the configured timeout."""
    stdout, payload = quick_run
    section = payload["breaker_open"]
    seen = {(r["engine"], r["cycle"], r["size"]) for r in section["rows"]}
    assert seen == {(e, c, s) for e in ("hybrid", "django-db") for c in ("change", "load")
                    for s in SIZES}  # fmt: skip
    for row in section["rows"]:
        assert row["timed_ops"] > 0
        assert math.isfinite(row["p99_us"]) and row["p99_us"] > 0
        if row["engine"] == "hybrid" and row["cycle"] == "load":
            assert row["db_writes"] == 0
    assert len(section["p99_ratios"]) == 2 * len(SIZES)
    assert all(math.isfinite(r["p99_ratio"]) for r in section["p99_ratios"])
    assert section["socket_timeout_s"] > 0
    assert "Breaker open" in stdout and "SOCKET_TIMEOUT" in stdout


def test_bytes_per_session_no_more_than_the_raw_floor(quick_run):
    """Redis memory per session (MEMORY USAGE) is at most a plain JSON string's."""
    _, payload = quick_run
    used = {(m["engine"], m["size"]): m["bytes"] for m in payload["memory"]}
    for size in SIZES:
        assert used["elastic", size] <= used["raw-floor", size]
        # The hybrid copy is the same hash plus its version and durable expiry.
        assert used["hybrid", size] > used["elastic", size]
    assert not any(m["engine"] == "django-db" for m in payload["memory"])


def test_report_prints_every_targeted_ratio(quick_run):
    """The printed report carries each target ratio with a verdict."""
    stdout, payload = quick_run
    targeted = [r for r in payload["ratios"] if r["target"]]
    # change/unchanged/load against Django's cache and the floor, plus bytes, plus
    # hybrid against cached_db on change and unchanged, per size.
    assert len(targeted) == 2 * (3 * 2 + 1 + 2)
    for ratio in targeted:
        assert ratio["verdict"] in {"PASS", "FAIL"}
    assert "Ratios" in stdout
    assert "elastic_sessions.backends.redis" in stdout
    assert "hybrid / cached-db" in stdout


def test_listing_benchmark_prints_each_read_and_memory_at_each_size():
    """``python -m benchmarks.listing`` runs end to end at tiny sizes: every read has
    its timings and ratio, and memory per session is printed for each size."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.listing", "--sizes", "60,200", "--repeats", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = ("list_page", "counts()", "detail()", "admin list page")
    reads = [line for line in proc.stdout.splitlines() if line.startswith(names)]
    assert len(reads) == 14
    for line in reads:
        # Two sizes (median and p95 each), then the ratio of the medians.
        figures = [word for word in line.split() if word.replace(".", "", 1).isdigit()]
        assert len(figures) == 5, line
    assert "median 200/60" in proc.stdout
    assert proc.stdout.count("B with the listing sets") == 2


def test_encryption_benchmark_prints_off_and_on_with_positive_ratios():
    """``python -m benchmarks.encryption`` runs end to end at one size: each cycle, and a
    load under an old key, has off and on figures and a positive on/off ratio, and
    Redis bytes per session are printed off and on."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.encryption", "--quick", "--sizes", "200B"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Code: " in proc.stdout and "cryptography" in proc.stdout
    assert "ops/s off" in proc.stdout and "on/off" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith("200B ")]
    timed, memory = rows[:-1], rows[-1]
    assert len(timed) == len(CYCLES) + 1
    assert any("values under an old key" in line for line in timed)
    for line in timed:
        # ops/s off, ±%, ops/s on, ±%, on/off, p50 off/on, p99 off/on, CPU off/on.
        figures = [float(word.replace(",", "")) for word in line.split()[-11:]]
        assert figures[4] > 0 and math.isfinite(figures[4]), line
        assert all(figure > 0 for i, figure in enumerate(figures) if i not in (1, 3)), line
    redis_off, redis_on = (int(word.replace(",", "")) for word in memory.split()[2:4])
    assert redis_on > redis_off > 0


def test_cluster_benchmark_prints_both_topologies_shards_and_sizing():
    """``python -m benchmarks.cluster`` runs end to end at one size: each engine and cycle has
    figures on one server and on the cluster, with the requests a load writes; the workers'
    run has a row per topology and a line per primary; bytes per session are printed."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.cluster", "--quick", "--sizes", "200B"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Code: " in proc.stdout and "CPUs: " in proc.stdout
    lines = proc.stdout.splitlines()
    timed = [line for line in lines if line.startswith(("200B  elastic", "200B  hybrid"))]
    assert len(timed) == 2 * len(CYCLES)
    trips = {}
    for line in timed:
        # Fixed columns up to the cycle's label, then ops/s and ±% per topology, cl/1,
        # p50 and p99 per topology, RT on one server, RT on the cluster.
        words = line[59:].split()
        figures = [float(word.replace(",", "")) for word in words[:9]]
        assert all(figure > 0 for i, figure in enumerate(figures) if i not in (1, 3)), line
        assert math.isfinite(figures[4]), line
        trips[line[6:14].strip(), line[15:59].strip()] = words[9], words[10]
    assert trips["elastic", "load only (read a key, no save)"] == ("1", "1")
    assert trips["elastic", "load + change 1 key + save"][0] == "2"
    rows = [line.split() for line in lines if line.strip().startswith("2 ")]
    assert [row[1] for row in rows] == ["1", "cluster"]  # "1 server" is two words
    assert all(float(row[-3].replace(",", "")) > 0 for row in rows)
    shards = [line for line in lines if line.startswith(" " * 19 + ":")]
    assert len(shards) == 1 + 3
    assert sum("es:ix:" in line for line in shards) >= 1
    (memory,) = [line.split() for line in lines if line.startswith("200B ") and line not in timed]
    session, index, seen, used = (float(memory[i].replace(",", "")) for i in (2, 4, 5, 7))
    assert used > session > 0 and index > 0 and seen > 0
