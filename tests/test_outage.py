"""When Redis is down, full or paused, the redis engine fails loudly, never logs out."""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.test import AsyncClient, Client

from elastic_sessions.backends.redis import SessionStore
from elastic_sessions.exceptions import SessionStoreUnavailable

from .contract import redis_key_of

COOKIE = settings.SESSION_COOKIE_NAME


@pytest.fixture
def durable_redis(redis_factory, use_server):
    """A private server that survives kill -9 with its data (AOF, fsync always)."""
    server = redis_factory(extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    use_server(server)
    return server


def signed_in_client():
    client = Client(raise_request_exception=False)
    assert client.get("/login/alice/").status_code == 200
    assert client.get("/set/color/blue/").status_code == 200
    return client


def assert_unavailable(response):
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert COOKIE not in response.cookies  # neither refreshed nor deleted
    assert "Cookie" in response["Vary"]


@pytest.mark.django_db
def test_killed_redis_gives_503_and_keeps_the_cookie(durable_redis, caplog):
    """With Redis killed, reads and writes answer 503 with Retry-After and a log line."""
    client = signed_in_client()
    cookie = client.cookies[COOKIE].value
    durable_redis.kill()
    with caplog.at_level(logging.ERROR, logger="elastic_sessions"):
        assert_unavailable(client.get("/get/color/"))
        assert_unavailable(client.get("/set/color/red/"))
    messages = [
        rec.getMessage() for rec in caplog.records if rec.name.startswith("elastic_sessions")
    ]
    assert any("Session store unavailable" in message for message in messages)
    assert client.cookies[COOKIE].value == cookie
    durable_redis.start()
    assert client.get("/get/color/").json() == {"value": "blue"}
    assert client.get("/get/_auth_user_id/").json()["value"] is not None


@pytest.mark.django_db
async def test_killed_redis_gives_503_on_async_views(durable_redis):
    """Async views get the same 503 while Redis is down, and recover after."""
    client = AsyncClient(raise_request_exception=False)
    await client.get("/async/set/color/green/")
    cookie = client.cookies[COOKIE].value
    durable_redis.kill()
    response = await client.get("/async/get/color/")
    assert_unavailable(response)
    durable_redis.start()
    assert client.cookies[COOKIE].value == cookie
    assert (await client.get("/async/get/color/")).json() == {"value": "green"}


def test_unreachable_redis_raises_a_clear_exception(redis_factory, use_server):
    """The engine raises SessionStoreUnavailable, naming what failed, when Redis is gone."""
    server = redis_factory()
    use_server(server)
    session = SessionStore()
    session["a"] = 1
    session.save()
    server.kill()
    with pytest.raises(SessionStoreUnavailable, match="could not load a session"):
        SessionStore(session.session_key)["a"]
    with pytest.raises(SessionStoreUnavailable, match="could not save a session"):
        fresh = SessionStore()
        fresh["a"] = 1
        fresh.save()


def test_outage_is_remembered_for_the_rest_of_the_request(redis_factory, use_server):
    """After one failed load, later accesses fail at once instead of waiting again."""
    from .roundtrips import count_round_trips

    server = redis_factory()
    use_server(server)
    session = SessionStore()
    session["a"] = 1
    session.save()
    server.kill()
    broken = SessionStore(session.session_key)
    with pytest.raises(SessionStoreUnavailable):
        broken.get("a")
    with count_round_trips() as trips, pytest.raises(SessionStoreUnavailable):
        broken.get("a")
    assert trips.count == 0


def test_restart_empty_starts_fresh_sessions(redis_factory, use_server):
    """A restart that lost the data gives new sessions (there is no durable copy here)."""
    server = redis_factory()
    use_server(server)
    client = Client()
    client.get("/set/a/1/")
    server.kill()
    server.start()
    response = client.get("/get/a/")
    assert response.status_code == 200
    assert response.json() == {"value": None}


def test_full_redis_refuses_writes_with_503_but_serves_reads(redis_factory, use_server):
    """Under maxmemory with noeviction, writes answer 503 and reads still work."""
    server = redis_factory(extra_args=["--maxmemory-policy", "noeviction"])
    use_server(server)
    client = Client(raise_request_exception=False)
    client.get("/set/a/1/")
    admin = server.client()
    admin.config_set("maxmemory", 1)  # any dataset is now over the limit
    assert_unavailable(client.get("/set/b/2/"))
    reading = client.get("/get/a/")
    assert reading.status_code == 200
    assert reading.json() == {"value": "1"}
    admin.config_set("maxmemory", 0)
    assert client.get("/set/b/2/").status_code == 200


def test_paused_redis_times_out_quickly_with_503(redis_factory, use_server):
    """A Redis that stops answering (CLIENT PAUSE) costs one short timeout, then 503."""
    import time

    server = redis_factory()
    use_server(server, SOCKET_TIMEOUT=0.2, RETRIES=0)
    client = Client(raise_request_exception=False)
    client.get("/set/a/1/")
    server.client().client_pause(1500, all=True)
    started = time.monotonic()
    response = client.get("/get/a/")
    elapsed = time.monotonic() - started
    assert_unavailable(response)
    assert elapsed < 1.0
    time.sleep(1.6)
    assert client.get("/get/a/").json() == {"value": "1"}


def due_for_a_touch(server):
    """A saved session whose TTL has run down far enough for the next load to slide it."""
    session = SessionStore()
    session["a"] = 1
    session.save()
    key = redis_key_of(session.session_key)
    server.client().pexpire(key, 5_000)
    return session.session_key, key


def test_a_touch_in_flight_survives_a_restart(durable_redis):
    """A touch sent after a load, its reply unread, does not break the next request
    when Redis restarts in between: the next call reconnects and works."""
    session_key, key = due_for_a_touch(durable_redis)
    loaded = SessionStore(session_key)
    assert loaded["a"] == 1
    assert loaded.touched_expiry_age is not None  # the touch was sent
    durable_redis.kill()
    durable_redis.start()
    again = SessionStore(session_key)
    assert again["a"] == 1
    again["b"] = 2
    again.save()
    assert durable_redis.client().ttl(key) > 1000
    assert SessionStore(session_key)["b"] == 2


async def test_async_touch_in_flight_survives_a_restart(durable_redis):
    """The async twin: an unread touch reply never desynchronises the connection."""
    session_key, key = due_for_a_touch(durable_redis)
    loaded = SessionStore(session_key)
    assert await loaded.aget("a") == 1
    assert loaded.touched_expiry_age is not None
    durable_redis.kill()
    durable_redis.start()
    again = SessionStore(session_key)
    assert await again.aget("a") == 1
    await again.aset("b", 2)
    await again.asave()
    assert durable_redis.client().ttl(key) > 1000
    assert await SessionStore(session_key).aget("b") == 2


def test_touch_replies_are_read_before_the_next_command(elastic_redis):
    """Many due touches in a row: every later reply lands where it belongs."""
    keys = [due_for_a_touch(elastic_redis) for _ in range(5)]
    for session_key, _ in keys:
        assert SessionStore(session_key)["a"] == 1
    for session_key, key in keys:
        assert elastic_redis.client().ttl(key) > 1000
        session = SessionStore(session_key)
        session["a"] = 2
        session.save()
        assert SessionStore(session_key)["a"] == 2


@pytest.mark.django_db
def test_recovery_is_announced_once_with_its_downtime(durable_redis, caplog):
    """After 503s, the first request served again logs INFO and sends store_recovered once."""
    from elastic_sessions.middleware import _Outage
    from elastic_sessions.signals import store_recovered

    _Outage.since = None
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    store_recovered.connect(receiver)
    try:
        client = signed_in_client()
        durable_redis.kill()
        assert_unavailable(client.get("/get/color/"))
        assert received == []
        durable_redis.start()
        with caplog.at_level(logging.INFO, logger="elastic_sessions"):
            assert client.get("/get/color/").json() == {"value": "blue"}
            assert client.get("/get/color/").json() == {"value": "blue"}
    finally:
        store_recovered.disconnect(receiver)
    assert len(received) == 1
    assert received[0]["downtime"] >= 0
    assert sum("recovered after" in rec.getMessage() for rec in caplog.records) == 1
