"""What encryption at rest (``ENCRYPTION_KEYS``) costs the Redis engine.

    python -m benchmarks.encryption [--quick] [--sizes 200B,4KB,64KB]

The redis-server, Django settings, session shapes, request cycles and
interleaved runs of ``python -m benchmarks``, for one engine,
``elastic_sessions.backends.redis``, under three settings: encryption off, on
(one key), and on after a rotation (a new key first, the old one second) over
sessions written under the old key alone.  A load writes nothing back, so the
last one's every load decrypts with the old key; its first change re-encrypts
the session with the new key, after which it costs what "on" costs.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.metadata import version
from typing import Any

import redis
from cryptography.hazmat.backends.openssl.backend import backend as openssl
from redis.utils import HIREDIS_AVAILABLE

from . import shapes
from .cli import code_version, measure_interleaved, versions
from .cycles import CYCLES, Workload
from .engines import OURS, Engine, SessionLike, close_clients, load_engines
from .environment import configure_django, redis_server, scratch_database
from .measure import footprint
from .report import Result, paired_ratio

# Benchmark-only secrets (32+ characters, as the setting requires).
NEW_KEY = "benchmarks-only-encryption-key-new-not-secret"
OLD_KEY = "benchmarks-only-encryption-key-old-not-secret"


@dataclass(frozen=True)
class Variant:
    name: str
    keys: tuple[str, ...]


OFF = Variant("off", ())
ON = Variant("on", (NEW_KEY,))
ROTATED = Variant("old key", (NEW_KEY, OLD_KEY))
# Writes the sessions ROTATED reads.
BEFORE_ROTATION = Variant("before rotation", (OLD_KEY,))
VARIANTS = (OFF, ON, ROTATED, BEFORE_ROTATION)
OLD_KEY_LOAD = "load only, values under an old key"


class _Switch:
    """The ``ENCRYPTION_KEYS`` the engine runs under, changed when another variant's
    store is asked for a session (the first cycle of a run: runs alternate variants)."""

    def __init__(self) -> None:
        from django.conf import settings

        self._settings = settings
        self._base = dict(settings.ELASTIC_SESSIONS)
        self._keys: tuple[str, ...] | None = None

    def use(self, keys: tuple[str, ...]) -> None:
        if keys is self._keys:
            return
        from elastic_sessions.conf import elastic_settings

        self._settings.ELASTIC_SESSIONS = {**self._base, "ENCRYPTION_KEYS": list(keys)}
        # Not the setting_changed signal: it also closes the connection pool, and
        # the next cycle would pay for a new connection.
        elastic_settings.clear_cache()
        self._keys = keys


def _engines(ours: Engine) -> dict[str, Engine]:
    switch = _Switch()

    def variant_store(keys: tuple[str, ...]) -> Callable[[str | None], SessionLike]:
        def store(key: str | None) -> SessionLike:
            switch.use(keys)
            return ours.store(key)

        return store

    return {v.name: replace(ours, name=v.name, store=variant_store(v.keys)) for v in VARIANTS}


@dataclass(frozen=True)
class Sealing:
    """Redis bytes of one new session, off and on, and how many of its fields were sealed."""

    bytes_off: int
    bytes_on: int
    encoding_off: str
    encoding_on: str
    sealed: int
    fields: int


def _stored(admin: redis.Redis, engine: Engine, key: str) -> dict[bytes, bytes]:
    raw: Any = admin.hgetall(engine.session_keys(key)[0])
    return dict(raw)


def _key_ids(fields: dict[bytes, bytes]) -> set[bytes]:
    """The key ids of the sealed values (bytes 1-4; see elastic_sessions/encryption.py)."""
    from elastic_sessions.codec import ENCRYPTED_MARK

    return {value[1:5] for name, value in fields.items() if name[:1] == ENCRYPTED_MARK}


def _readable(engine: Engine, key: str, data: dict[str, Any], what: str) -> None:
    session = engine.store(key)
    wrong = [name for name in data if session.get(name) != data[name]]
    assert not wrong, f"{what}: {', '.join(wrong)} read back differently"


def check_sealing(engines: dict[str, Engine], data: dict[str, Any], admin: redis.Redis) -> Sealing:
    """Fail loudly unless each variant stores what it claims; returns the memory figures.

    Off stores nothing sealed; on seals values; after a rotation a load opens
    values under the old key and leaves them there, and a change re-seals them
    with the new key.
    """
    off, on, rotated = engines[OFF.name], engines[ON.name], engines[ROTATED.name]
    use_off = footprint(Workload(off, CYCLES["create"], data, admin))
    use_on = footprint(Workload(on, CYCLES["create"], data, admin))
    keys: list[str] = []
    try:
        for engine in (off, on, engines[BEFORE_ROTATION.name]):
            keys.append(Workload(engine, CYCLES["create"], data, admin).create_session())
        clear, sealed, old = (_stored(admin, off, key) for key in keys)
        assert not _key_ids(clear), "off: values were sealed"
        new_ids, old_ids = _key_ids(sealed), _key_ids(old)
        assert len(new_ids) == 1 and len(old_ids) == 1 and new_ids != old_ids, "on: key ids"
        # Every value but _auth_user_id (kept in the clear on purpose).
        assert _sealed(sealed) == len(data) - 1, f"on: {_sealed(sealed)} values sealed"
        _readable(on, keys[1], data, "on")
        _readable(rotated, keys[2], data, "old key")
        assert _key_ids(_stored(admin, off, keys[2])) == old_ids, "a load re-sealed values"
        session = rotated.store(keys[2])
        session[shapes.CHANGED_KEY] = 1
        session.save()
        assert _key_ids(_stored(admin, off, keys[2])) == new_ids, "a change did not re-seal"
    finally:
        for key in keys:
            off.discard(admin, key)
    return Sealing(
        use_off.bytes, use_on.bytes, use_off.encoding, use_on.encoding, _sealed(sealed), len(sealed)
    )


def _sealed(fields: dict[bytes, bytes]) -> int:
    from elastic_sessions.codec import ENCRYPTED_MARK

    return sum(name[:1] == ENCRYPTED_MARK for name in fields)


def _workloads(
    engines: dict[str, Engine], cycle: str, data: dict[str, Any], admin: redis.Redis
) -> list[Workload]:
    found = [Workload(engines[v.name], CYCLES[cycle], data, admin) for v in (OFF, ON)]
    if cycle == "load":
        # Written before the rotation, read after it.
        old = Workload(engines[BEFORE_ROTATION.name], CYCLES[cycle], data, admin)
        old.engine = engines[ROTATED.name]
        found.append(old)
    return found


@dataclass(frozen=True)
class Row:
    size: str
    label: str
    off: Result
    on: Result

    @property
    def ratio(self) -> float:
        return paired_ratio(self.on.runs_ops_per_second, self.off.runs_ops_per_second)


def _rows(results: list[Result]) -> list[Row]:
    by_key = {(r.engine, r.cycle, r.size): r for r in results}
    rows = []
    for r in results:
        if r.engine == OFF.name:
            rows.append(Row(r.size, CYCLES[r.cycle].label, r, by_key[ON.name, r.cycle, r.size]))
            rotated = by_key.get((ROTATED.name, r.cycle, r.size))
            if rotated is not None:
                rows.append(Row(r.size, OLD_KEY_LOAD, r, rotated))
    return rows


def results_table(rows: list[Row]) -> str:
    head = (
        f"{'size':<5} {'cycle':<44} {'ops/s off':>9} {'±%':>3} {'ops/s on':>9} {'±%':>3} "
        f"{'on/off':>6} {'p50 off':>8} {'p50 on':>8} {'p99 off':>8} {'p99 on':>8} "
        f"{'CPU off':>8} {'CPU on':>8}"
    )
    lines = [head, "-" * len(head)]
    previous = None
    for row in rows:
        if previous is not None and row.size != previous:
            lines.append("")
        previous = row.size
        off, on = row.off, row.on
        lines.append(
            f"{row.size:<5} {row.label:<44} {off.ops_per_second:>9,.0f} {off.spread_pct:>3.0f} "
            f"{on.ops_per_second:>9,.0f} {on.spread_pct:>3.0f} {row.ratio:>6.2f} "
            f"{off.p50_us:>8.1f} {on.p50_us:>8.1f} {off.p99_us:>8.1f} {on.p99_us:>8.1f} "
            f"{off.client_cpu_us:>8.1f} {on.client_cpu_us:>8.1f}"
        )
    return "\n".join(lines)


def memory_table(memory: dict[str, Sealing]) -> str:
    head = (
        f"{'size':<5} {'JSON B':>7} {'Redis B off':>11} {'Redis B on':>11} {'on - off':>9} "
        f"{'on/off':>6}  {'encoding off / on':<21} sealed fields"
    )
    lines = [head, "-" * len(head)]
    for size, m in memory.items():
        json_bytes = shapes.json_size(shapes.build(size))
        lines.append(
            f"{size:<5} {json_bytes:>7,} {m.bytes_off:>11,} {m.bytes_on:>11,} "
            f"{m.bytes_on - m.bytes_off:>9,} {m.bytes_on / m.bytes_off:>6.2f}  "
            f"{m.encoding_off + ' / ' + m.encoding_on:<21} {m.sealed} of {m.fields}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.encryption",
        description="The Redis engine with ENCRYPTION_KEYS off, on, and after a rotation.",
    )
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=shapes.SIZES,
        help=f"comma-separated, from {','.join(shapes.SIZES)} (default: all)",
    )
    parser.add_argument("--seconds", type=float, help="timed seconds per variant (default 2.5)")
    parser.add_argument("--repeats", type=int, help="interleaved runs to split them into (10)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.seconds = args.seconds or (0.06 if quick else 2.5)
    args.repeats = max(1, args.repeats or (2 if quick else 10))
    args.warmup = 5 if quick else 100
    args.rt_cycles = 3 if quick else 10
    args.cpu_seconds = 0.02 if quick else 0.5
    return args


def _sizes(value: str) -> tuple[str, ...]:
    picked = tuple(part.strip() for part in value.split(",") if part.strip())
    if not picked or any(size not in shapes.SIZES for size in picked):
        raise argparse.ArgumentTypeError(f"choose from {','.join(shapes.SIZES)}")
    return picked


def _preamble(args: argparse.Namespace, server_info: dict[str, Any]) -> str:
    found = {
        **versions(server_info),
        "cryptography": version("cryptography"),
        "openssl": openssl.openssl_version_text(),
    }
    listed = ", ".join(f"{name} {v}" for name, v in found.items())
    return "\n".join(
        [
            "django-elastic-sessions benchmarks: encryption at rest (ENCRYPTION_KEYS),"
            " elastic_sessions.backends.redis"
            + (" (--quick: figures are rough)" if args.quick else ""),
            f"Code: {code_version()}; versions: {listed}; hiredis parser: {HIREDIS_AVAILABLE};"
            f" CPUs: {os.cpu_count()}",
            "Variants: off = no keys; on = one key (AES-256-GCM); old key = [new key, old key]"
            " over sessions written under the old key alone.",
            "Method: as `python -m benchmarks` (same shapes, cycles, measure.py), one engine:"
            f" per cycle and size {args.warmup} warm-up cycles, then {args.repeats} runs of"
            f" {args.seconds / args.repeats:.2f} s",
            "  per variant, interleaved (order rotated); the setting is switched (settings"
            " + elastic_settings.clear_cache()) in the first cycle of each run.",
            "  ops/s = median over the runs; ±% = half their interquartile range; on/off ="
            " median over rounds of the ratio within a round (< 1: encryption is slower).",
            "  p50/p99 = µs per cycle over all timed cycles; CPU = this process's CPU µs per cycle"
            f" over a separate untimed pass of {args.cpu_seconds} s.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: list[Result] = []
    memory: dict[str, Sealing] = {}
    with redis_server() as server, scratch_database() as database:
        configure_django(server.url, database)
        admin = server.client()
        print(_preamble(args, admin.info("server")), flush=True)
        engines = _engines(load_engines((OURS,))[0])
        try:
            for size in args.sizes:
                data = shapes.build(size)
                admin.flushdb()
                memory[size] = check_sealing(engines, data, admin)
                for cycle in CYCLES:
                    results += measure_interleaved(
                        _workloads(engines, cycle, data, admin), size, args
                    )
        finally:
            close_clients()
            admin.close()
    print("\n" + results_table(_rows(results)))
    print(
        f"\n{OLD_KEY_LOAD}: the 'on' columns are the old-key variant's (the first load after"
        " a rotation, each time: a load writes nothing back)."
    )
    print("\nRedis memory per session (MEMORY USAGE <key> SAMPLES 0, a new session)\n")
    print(memory_table(memory))
    print(
        "A sealed value is 34 B longer (version, key id, nonce, tag, form byte); past the"
        " server's hash-max-listpack-value (default 64 B) a hash leaves listpack for hashtable."
    )
    print(
        "Checked before timing: off seals nothing; on seals every value but _auth_user_id and"
        " the metadata; after a rotation a load reads old-key values and leaves them, a change"
        " re-seals them with the new key."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
