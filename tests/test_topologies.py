from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

if TYPE_CHECKING:
    from .redis_topologies import ClusterTopology, SentinelTopology

# Until tests/conftest.py loads it: importing the module here would skip its assert rewriting.
pytest_plugins = ["tests.redis_topologies"]
pytestmark = pytest.mark.topology

CLUSTER_SLOTS = 16384

# Issue 7 asks for a bounded failover; both topologies usually need 2-3 s.
FAILOVER_BOUND = 15


def cluster_client(topology: ClusterTopology) -> RedisCluster:
    nodes = [ClusterNode(host, port) for host, port in topology.seeds]
    return RedisCluster(startup_nodes=nodes, decode_responses=True, socket_timeout=2)


def keys_on_every_primary(client: RedisCluster, primaries: int) -> list[str]:
    """One key per primary, so a test touches every shard."""
    by_port: dict[int, str] = {}
    index = 0
    while len(by_port) < primaries:
        key = f"topology-{index}"
        by_port.setdefault(client.get_node_from_key(key).port, key)
        index += 1
    return list(by_port.values())


def test_cluster_has_three_primaries_with_one_replica_each(cluster_topology):
    """The cluster is three live primaries covering all 16384 slots, each with one replica."""
    nodes = cluster_topology.nodes()
    primaries = [n for n in nodes if n.is_primary]
    assert len(primaries) == 3
    assert sum(n.slots for n in primaries) == CLUSTER_SLOTS
    for primary in primaries:
        assert [n.port for n in nodes if n.primary_id == primary.node_id] == [
            cluster_topology.replica_of(primary.port).port
        ]
    assert len(cluster_topology.replicas()) == 3
    for _, port in cluster_topology.seeds:
        state = cluster_topology.cluster_info(port)
        assert state["cluster_state"] == "ok"
        assert state["cluster_slots_assigned"] == str(CLUSTER_SLOTS)
        assert state["cluster_known_nodes"] == "6"


def test_cluster_client_writes_and_reads_keys_on_every_primary(cluster_topology):
    """A RedisCluster client from the seeds routes keys in different slots to their owners."""
    with cluster_client(cluster_topology) as client:
        keys = keys_on_every_primary(client, 3)
        for key in keys:
            assert client.set(key, f"value of {key}")
        assert [client.get(key) for key in keys] == [f"value of {key}" for key in keys]
        owners = {client.get_node_from_key(key).port for key in keys}
        assert owners == {server.port for server in cluster_topology.primaries()}
        for key in keys:
            # Stored on the owning primary itself, not merely routed somewhere.
            with cluster_topology.client(client.get_node_from_key(key).port) as node:
                assert node.get(key) == f"value of {key}"
        client.delete(*keys)


def test_cluster_fails_over_to_the_replica_of_a_killed_primary(make_cluster):
    """SIGKILL of a primary promotes its replica, which keeps the data, within the bound."""
    cluster = make_cluster()
    with cluster_client(cluster) as client:
        victim = cluster.primaries()[0]
        replica = cluster.replica_of(victim.port)
        victim_slots = cluster.slots_of(victim.port)
        key = next(k for k in (f"k{i}" for i in range(1000)) if client.keyslot(k) in victim_slots)
        client.set(key, "survives")
        with cluster.client(victim.port) as node:
            assert node.execute_command("WAIT", 1, 2000) == 1
    cluster.kill_primary(0)

    seconds = cluster.wait_for_failover(victim.port, timeout=FAILOVER_BOUND)

    print(f"cluster failover took {seconds:.2f} s")
    assert seconds < FAILOVER_BOUND
    assert replica.port in {server.port for server in cluster.primaries()}
    assert len(cluster.primaries()) == 3
    with cluster_client(cluster) as client:
        assert client.get(key) == "survives"
        assert client.get_node_from_key(key).port == replica.port
        assert client.set(key, "written after the failover")


def test_sentinel_names_the_primary(sentinel_topology):
    """Every one of the three sentinels names the primary that holds role:master."""
    host, port = sentinel_topology.primary_address()
    assert host == "127.0.0.1"
    assert port == sentinel_topology.primary().port
    assert len(sentinel_topology.sentinels) == 3
    for sentinel_host, sentinel_port in sentinel_topology.sentinels:
        with sentinel_topology.client(sentinel_port) as sentinel:
            assert sentinel_host == "127.0.0.1"
            assert sentinel.sentinel_get_master_addr_by_name(sentinel_topology.service) == (
                host,
                port,
            )
    with sentinel_topology.client(port) as primary:
        assert primary.info("replication")["role"] == "master"
        assert primary.info("replication")["connected_slaves"] == 1


def test_sentinel_client_writes_reach_the_replica(sentinel_topology):
    """A redis-py Sentinel client writes to the primary, and the replica receives the key."""
    sentinel = Sentinel(sentinel_topology.sentinels, socket_timeout=2)
    primary = sentinel.master_for(sentinel_topology.service, decode_responses=True)
    primary.set("topology-sentinel", "replicated")
    # WAIT returns once the replica has acknowledged the write.
    assert primary.execute_command("WAIT", 1, 2000) == 1
    [replica] = sentinel_topology.replicas()
    with sentinel_topology.client(replica.port) as client:
        assert client.get("topology-sentinel") == "replicated"
    primary.delete("topology-sentinel")
    primary.close()
    for connection in sentinel.sentinels:
        connection.close()


def test_sentinel_promotes_the_replica_when_the_primary_dies(make_sentinel):
    """SIGKILL of the primary makes the sentinels promote the replica within the bound."""
    topology: SentinelTopology = make_sentinel()
    sentinel = Sentinel(topology.sentinels, socket_timeout=2)
    client = sentinel.master_for(topology.service, decode_responses=True)
    client.set("before", "kept")
    assert client.execute_command("WAIT", 1, 2000) == 1
    [replica] = topology.replicas()
    old = topology.kill_primary()

    address, seconds = topology.wait_for_failover(timeout=FAILOVER_BOUND)

    print(f"sentinel failover took {seconds:.2f} s")
    assert seconds < FAILOVER_BOUND
    assert address == ("127.0.0.1", replica.port)
    assert sentinel.discover_master(topology.service) == address
    assert client.get("before") == "kept"
    assert client.set("after", "written")
    topology.restart()
    assert topology.replicas() == [old]
    assert client.execute_command("WAIT", 1, 2000) == 1
    with topology.client(old.port) as restarted:
        assert restarted.info("replication")["role"] == "slave"
        assert restarted.get("after") == "written"
    client.close()
    for connection in sentinel.sentinels:
        connection.close()
