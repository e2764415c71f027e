"""Both engines pass the shared contract on Redis Sentinel and on a three-primary
Redis Cluster, and the per-user index, the admin listing, revocation and login
rotation work there with no CROSSSLOT error on any path."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from io import StringIO
from typing import TYPE_CHECKING, Any

import pytest
import redis
from django.contrib.auth import SESSION_KEY, get_user_model
from django.core.management import call_command
from django.test import Client
from redis.cluster import ClusterNode, RedisCluster

from elastic_sessions import api, listing
from elastic_sessions.backends.hybrid import SessionStore as HybridStore
from elastic_sessions.backends.redis import SessionStore as RedisStore
from elastic_sessions.connection import reset_clients

from .contract import SessionContract, redis_key_of

if TYPE_CHECKING:
    from .redis_server import RedisServer
    from .redis_topologies import ClusterTopology, SentinelTopology

pytest_plugins = ["tests.redis_topologies"]
pytestmark = pytest.mark.topology


def sentinel_settings(topology: SentinelTopology) -> dict[str, Any]:
    return {
        "REDIS_URL": "redis:///0",
        "SENTINELS": [f"{host}:{port}" for host, port in topology.sentinels],
        "SENTINEL_SERVICE": topology.service,
    }


def cluster_settings(topology: ClusterTopology) -> dict[str, Any]:
    host, port = topology.seeds[0]
    seeds = [f"{h}:{p}" for h, p in topology.seeds[1:]]
    return {"REDIS_URL": f"redis://{host}:{port}/0", "CLUSTER": True, "CLUSTER_NODES": seeds}


def cluster_client(topology: ClusterTopology) -> RedisCluster:
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in topology.seeds])


def sentinel_primary(topology: SentinelTopology) -> redis.Redis:
    host, port = topology.primary_address()
    return redis.Redis(host=host, port=port)


@pytest.fixture(params=["sentinel", "cluster"])
def topology(request, settings, elastic_redis) -> Iterator[Any]:
    """The engines pointed at a Sentinel or Cluster topology, emptied; a raw client to it."""
    if request.param == "sentinel":
        shared: SentinelTopology = request.getfixturevalue("sentinel_topology")
        settings.ELASTIC_SESSIONS = sentinel_settings(shared)
        client: Any = sentinel_primary(shared)
    else:
        cluster: ClusterTopology = request.getfixturevalue("cluster_topology")
        settings.ELASTIC_SESSIONS = cluster_settings(cluster)
        client = cluster_client(cluster)
    reset_clients()
    client.flushall()
    yield client
    reset_clients()
    client.close()


class TestRedisEngineOnTopologies(SessionContract):
    SessionStore = RedisStore

    @pytest.fixture(autouse=True)
    def _topology(self, topology):
        self.redis = topology

    def stored_ttl(self, session_key: str) -> int:
        return int(self.redis.ttl(redis_key_of(session_key)))


@pytest.mark.django_db(transaction=True)
@pytest.mark.database
class TestHybridEngineOnTopologies(SessionContract):
    SessionStore = HybridStore

    @pytest.fixture(autouse=True)
    def _topology(self, topology):
        self.redis = topology

    def stored_ttl(self, session_key: str) -> int:
        return int(self.redis.ttl(redis_key_of(session_key)))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("engine", ["redis", "hybrid"])
def test_index_listing_revocation_and_login_rotation(topology, engine, settings):
    """Logins, the per-user index, the admin list and every revocation path work, with
    sessions spread over every slot."""
    settings.SESSION_ENGINE = f"elastic_sessions.backends.{engine}"
    browsers = []
    for _ in range(8):
        browser = Client(REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="curl/8.5")
        assert browser.get("/login/alice/").status_code == 200
        assert browser.get("/set/a/1/").status_code == 200
        browsers.append(browser)
    alice = get_user_model().objects.get(username="alice")
    infos = api.list_sessions(alice)
    assert len(infos) == 8
    page = listing.list_page(listing.ListQuery(), 1)
    assert page.total == 8
    assert listing.counts().active == 8
    found = listing.detail(page.rows[0].storage_id)
    assert found is not None and found.data is not None and found.data["a"] == "1"
    assert api.revoke_session(alice, infos[0].storage_id)
    assert len(listing.revoke([info.storage_id for info in infos[1:3]])) == 2
    assert api.revoke_user_sessions(alice) == 5
    assert api.list_sessions(alice) == []
    assert all(b.get("/get/a/").json() == {"value": None} for b in browsers)
    # An anonymous cart survives the login's key rotation (create + delete, no RENAME).
    shopper = Client()
    shopper.get("/set/cart/3/")
    before = shopper.cookies["sessionid"].value
    shopper.get("/login/bob/")
    assert shopper.cookies["sessionid"].value != before
    assert shopper.get("/get/cart/").json() == {"value": "3"}


@pytest.mark.django_db
def test_clearsessions_and_stats_walk_every_primary_of_the_cluster(cluster_topology, settings):
    """The whole-keyspace commands see the sessions of all three primaries."""
    settings.ELASTIC_SESSIONS = cluster_settings(cluster_topology)
    reset_clients()
    client = cluster_client(cluster_topology)
    client.flushall()
    keys = []
    for n in range(30):
        session = RedisStore()
        session.update({SESSION_KEY: str(n), "cart": [n]})
        session.save()
        keys.append(session.session_key)
    nodes = [client.get_redis_connection(node) for node in client.get_primaries()]
    assert len(nodes) == 3 and all(node.dbsize() > 0 for node in nodes)
    out = StringIO()
    call_command("sessions_elastic_stats", "--json", stdout=out)
    assert json.loads(out.getvalue())["redis"]["sessions"] == 30
    # A session gone (evicted, say): its index entry, on some primary, is pruned.
    client.delete(redis_key_of(keys[0]))
    report = StringIO()
    call_command("clearsessions_elastic", stdout=report)
    assert "stale index entries removed: 1" in report.getvalue()
    assert api.list_sessions("0") == []
    reset_clients()


def test_a_standalone_servers_sessions_move_into_the_cluster(
    cluster_topology, redis_factory, settings
):
    """`redis-cli --cluster import` (docs/scaling.md) moves sessions, indexes and TTLs:
    every session still loads on the cluster under its cookie."""
    old: RedisServer = redis_factory()
    settings.ELASTIC_SESSIONS = {"REDIS_URL": old.url}
    reset_clients()
    cookies = []
    for n in range(50):
        session = RedisStore()
        session.update({SESSION_KEY: str(n % 5), "cart": [n]})
        session.save()
        cookies.append(session.session_key)
    cluster = cluster_client(cluster_topology)
    cluster.flushall()
    host, port = cluster_topology.seeds[0]
    subprocess.run(
        ["redis-cli", "--cluster", "import", f"{host}:{port}", "--cluster-from",
         f"127.0.0.1:{old.port}", "--cluster-copy", "--cluster-replace"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    settings.ELASTIC_SESSIONS = cluster_settings(cluster_topology)
    reset_clients()
    assert [RedisStore(key).get("cart") for key in cookies] == [[n] for n in range(50)]
    assert len(api.list_sessions("3")) == 10
    assert 0 < cluster.ttl(redis_key_of(cookies[0])) <= 14 * 24 * 3600
    reset_clients()
