"""Whole-keyspace passes walk every primary of a three-primary Redis Cluster: garbage
collection (also stopped and resumed), stats and re-encryption; and the per-primary
SCAN cursors of garbage collection on a standalone server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import StringIO
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.cluster
from django.contrib.auth import SESSION_KEY
from django.core.management import CommandError, call_command

from elastic_sessions import api
from elastic_sessions.backends.redis import SessionStore
from elastic_sessions.connection import reset_clients
from elastic_sessions.keys import storage_id, user_index_redis_key

from .contract import redis_key_of

if TYPE_CHECKING:
    from .redis_topologies import ClusterTopology

pytest_plugins = ["tests.redis_topologies"]
pytestmark = pytest.mark.django_db

OLD_KEY = "old-secret-" + "o" * 40
NEW_KEY = "new-secret-" + "n" * 40
USERS = [str(n) for n in range(30)]


@pytest.fixture
def cluster_settings(cluster_topology: ClusterTopology) -> dict[str, Any]:
    host, port = cluster_topology.seeds[0]
    seeds = [f"{h}:{p}" for h, p in cluster_topology.seeds[1:]]
    return {"REDIS_URL": f"redis://{host}:{port}/0", "CLUSTER": True, "CLUSTER_NODES": seeds}


@pytest.fixture
def on_cluster(
    cluster_topology: ClusterTopology,
    cluster_settings: dict[str, Any],
    settings: Any,
    elastic_redis: Any,
) -> Iterator[redis.cluster.RedisCluster]:
    """The engines on the shared cluster, emptied; yields a client of that cluster."""
    settings.ELASTIC_SESSIONS = cluster_settings
    host, port = cluster_topology.seeds[0]
    client = redis.cluster.RedisCluster(host=host, port=port)
    client.flushall()
    yield client
    client.close()
    reset_clients()


def per_primary(topology: ClusterTopology, pattern: str) -> dict[int, int]:
    """How many keys match ``pattern`` on each primary, by port."""
    counts = {}
    host = topology.seeds[0][0]
    for server in topology.primaries():
        with redis.Redis(host, server.port) as node:
            counts[server.port] = sum(1 for _ in node.scan_iter(match=pattern, count=1000))
    return counts


def on_every_primary(topology: ClusterTopology, pattern: str) -> bool:
    counts = per_primary(topology, pattern)
    return len(counts) == 3 and min(counts.values()) > 0


def signed_in(user_id: str, **values: Any) -> SessionStore:
    session = SessionStore()
    session.update({SESSION_KEY: user_id, **values})
    session.save()
    return session


def run(command: str, *args: str) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def gc_once(*args: str) -> tuple[str, bool]:
    """One clearsessions_elastic run: its summary, and whether it finished the pass."""
    out = StringIO()
    try:
        call_command("clearsessions_elastic", *args, stdout=out)
    except CommandError as stopped:
        assert stopped.returncode == 3, stopped
        return out.getvalue(), False
    return out.getvalue(), True


def keys_scanned(summary: str) -> int:
    return int(summary.split("keys scanned: ")[1].split(";", maxsplit=1)[0])


@pytest.mark.topology
def test_gc_prunes_indexes_and_malformed_keys_on_every_primary(on_cluster, cluster_topology):
    """Stale user-index entries and malformed keys go on all three primaries; live
    sessions, their index entries and keys outside the prefix stay."""
    sessions = [signed_in(user) for user in USERS for _ in range(2)]
    gone = sessions[::2]  # one session of each user
    for session in gone:
        on_cluster.delete(redis_key_of(session.session_key))
    junk = [f"es:junk{n}" for n in range(30)]
    for key in junk:
        on_cluster.set(key, "x")
    on_cluster.set("other:app:key", "kept")
    assert on_every_primary(cluster_topology, "es:u:*")
    assert on_every_primary(cluster_topology, "es:junk*")
    dry = run("clearsessions_elastic", "--dry-run")
    assert "stale index entries would remove: 30; malformed keys would remove: 30" in dry
    assert sum(per_primary(cluster_topology, "es:junk*").values()) == 30
    out = run("clearsessions_elastic")
    assert "user indexes: 30; stale index entries removed: 30; malformed keys removed: 30" in out
    assert "; complete" in out
    assert sum(per_primary(cluster_topology, "es:junk*").values()) == 0
    for user, live in zip(USERS, sessions[1::2], strict=True):
        members = on_cluster.zrange(user_index_redis_key(user), 0, -1)
        assert members == [storage_id(live.session_key).encode()]
        assert SessionStore(live.session_key)[SESSION_KEY] == user
    assert on_cluster.get("other:app:key") == b"kept"
    assert on_cluster.exists("es:gc:cursor") == 0


@pytest.mark.topology
def test_a_stopped_pass_resumes_on_each_primary_and_scans_each_key_once(
    on_cluster, cluster_topology
):
    """Runs cut short by --max-seconds keep one cursor per primary and, together,
    scan every key of every primary exactly once before the pass completes."""
    for n in range(300):
        on_cluster.set(f"es:junk{n}", "x")
    assert on_every_primary(cluster_topology, "es:junk*")
    total = sum(per_primary(cluster_topology, "es:*").values())
    host = cluster_topology.seeds[0][0]
    primaries = {f"{host}:{server.port}" for server in cluster_topology.primaries()}
    scanned, runs, finished = 0, 0, False
    while not finished:
        runs += 1
        assert runs < 500, "the pass never completes"
        summary, finished = gc_once("--dry-run", "--batch-size", "10", "--max-seconds", "1e-6")
        scanned += keys_scanned(summary)
        if not finished:
            kept = {field.decode() for field in on_cluster.hkeys("es:gc:cursor")}
            assert kept and kept <= primaries
    assert runs > 3
    assert scanned == total
    assert on_cluster.exists("es:gc:cursor") == 0
    assert sum(per_primary(cluster_topology, "es:junk*").values()) == 300  # a dry run
    summary, finished = gc_once("--batch-size", "50")
    assert finished and "malformed keys removed: 300" in summary
    assert sum(per_primary(cluster_topology, "es:junk*").values()) == 0


@pytest.mark.topology
def test_stats_count_every_session_on_every_primary(on_cluster, cluster_topology):
    """Sessions, user indexes and indexed sessions of all three primaries are counted."""
    for user in USERS:
        signed_in(user)
        signed_in(user)
    for _ in range(10):
        SessionStore().save()  # an anonymous session: saved empty, as Django never does
    assert on_every_primary(cluster_topology, "es:{*}")
    stats = api.session_stats(top=1)
    figures = stats.redis
    assert figures is not None
    assert (figures.sessions, figures.user_indexes, figures.indexed_sessions) == (70, 30, 60)
    assert (figures.without_metadata, figures.other_keys, figures.without_ttl) == (0, 0, 0)
    assert figures.evicted_keys == 0  # summed over the primaries
    assert figures.memory is not None and figures.memory.sampled == 70
    assert [user.sessions for user in stats.top_users] == [2]
    assert json.loads(run("sessions_elastic_stats", "--json"))["redis"]["sessions"] == 70


@pytest.mark.topology
def test_reencrypt_rewrites_sessions_on_every_primary(on_cluster, cluster_topology, settings):
    """After the command every session, wherever its slot is, opens with the new key alone."""
    cluster = settings.ELASTIC_SESSIONS
    settings.ELASTIC_SESSIONS = {**cluster, "ENCRYPTION_KEYS": [OLD_KEY]}
    sessions = [signed_in(user, note=f"note {user}") for user in USERS]
    assert on_every_primary(cluster_topology, "es:{*}")
    settings.ELASTIC_SESSIONS = {**cluster, "ENCRYPTION_KEYS": [NEW_KEY, OLD_KEY]}
    assert "redis values would rewrite: 30;" in run("reencrypt_sessions_elastic", "--dry-run")
    summary = run("reencrypt_sessions_elastic")
    assert "redis values rewritten: 30;" in summary
    assert "keys scanned: 30;" in summary
    assert "unreadable with the configured keys: 0" in summary
    assert "redis values rewritten: 0;" in run("reencrypt_sessions_elastic")
    settings.ELASTIC_SESSIONS = {**cluster, "ENCRYPTION_KEYS": [NEW_KEY]}
    for user, session in zip(USERS, sessions, strict=True):
        assert SessionStore(session.session_key)["note"] == f"note {user}"


def test_a_cursor_that_is_not_a_hash_starts_the_pass_over(elastic_redis):
    """On a standalone server, a ``gc:cursor`` of another type (a single cursor of an
    earlier development version) is replaced, not a reason for every run to fail."""
    r = elastic_redis.client()
    for n in range(50):
        r.set(f"es:junk{n}", "x")
    r.set("es:gc:cursor", "12345", ex=60)
    runs = [gc_once("--batch-size", "10", "--max-seconds", "1e-6")[1]]
    assert runs == [False]
    assert r.type("es:gc:cursor") == b"hash"
    assert set(r.hkeys("es:gc:cursor")) == {b"primary"}
    while not runs[-1]:
        assert len(runs) < 100, "the pass never completes"
        runs.append(gc_once("--batch-size", "10", "--max-seconds", "1e-6")[1])
    assert list(r.scan_iter(match="es:junk*")) == []
    assert r.exists("es:gc:cursor") == 0
