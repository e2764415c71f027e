"""Hostile session keys, fuzzed: through the engine API (hypothesis) and as cookies
over HTTP (10,000 seeded values), on both engines, against a real redis-server.

Nothing a client sends that is not a key we issued may reach Redis, create a
session, be adopted, or cause a 500.  "Reached Redis" is measured by the server
itself: ``CONFIG RESETSTAT``, then ``INFO commandstats`` and ``DBSIZE``.
"""

from __future__ import annotations

from importlib import import_module

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from hypothesis import given
from hypothesis import settings as hypothesis_settings

from elastic_sessions.keys import is_valid_session_key, storage_id_from_redis_key
from elastic_sessions.models import DurableSession
from elastic_sessions.storage.redis_copy import VERSION_FIELD

from .contract import redis_key_of
from .hostile_values import CI, hostile_cookie_values, hostile_cookies, hostile_keys

# At least 10,000 distinct hostile cookies per engine over HTTP (issue 6).
FUZZ_COOKIES = 10_000
# Requests that write: each must get a fresh key and exactly one new session.
FUZZ_WRITES = 1_000
# What the admin client itself runs between the reset and the read of the stats.
ADMIN_COMMANDS = {"config|resetstat", "info"}


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.django_db),
        pytest.param(
            "hybrid", marks=[pytest.mark.django_db(transaction=True), pytest.mark.database]
        ),
    ]
)
def engine(request, settings):
    """Each engine's SessionStore, configured as the site's engine."""
    settings.SESSION_ENGINE = f"elastic_sessions.backends.{request.param}"
    return import_module(settings.SESSION_ENGINE).SessionStore


@pytest.fixture
def r(elastic_redis):
    return elastic_redis.client()


def commands_since_reset(r):
    """Every command the server ran since CONFIG RESETSTAT, but the admin client's own."""
    stats = r.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}
    return {name: n for name, n in calls.items() if name not in ADMIN_COMMANDS}


def session_hashes(r):
    """The Redis hashes that hold a session, whatever else Redis holds (user indexes,
    listing sets, and the hybrid engine's fences: a deleted session's version alone)."""
    keys = (key.decode() for key in r.scan_iter(count=1000))
    return {
        key
        for key in keys
        if storage_id_from_redis_key(key) is not None and set(r.hkeys(key)) - {VERSION_FIELD}
    }


def start_clean(r, engine):
    r.flushall()
    if engine.__module__.endswith("hybrid"):
        DurableSession.objects.all().delete()
    r.config_resetstat()


# -- the engine API ---------------------------------------------------------------
@hypothesis_settings(CI, max_examples=500)
@given(key=hostile_keys)
def test_hostile_key_never_reaches_redis_nor_is_adopted(engine, r, key):
    """Reads, exists and delete with a hostile key send nothing to Redis; save and
    cycle_key then store the data under fresh keys of our own, one session each."""
    start_clean(r, engine)
    session = engine(key)
    assert session.storage_id is None  # the key was dropped: nothing to look up
    assert session.get("anything") is None
    assert dict(session.items()) == {}
    assert session.is_empty()
    assert not session.exists(key)
    session.delete(key)
    session.delete()
    assert commands_since_reset(r) == {}
    assert r.dbsize() == 0

    session["cart"] = [1, 2]
    session.save()
    created = session.session_key
    assert is_valid_session_key(created)
    assert created != key
    assert session_hashes(r) == {redis_key_of(created)}
    session.cycle_key()
    assert session.session_key not in (key, created)
    assert session_hashes(r) == {redis_key_of(session.session_key)}
    assert engine(session.session_key)["cart"] == [1, 2]
    assert not engine().exists(created)


@hypothesis_settings(CI, max_examples=200)
@given(key=hostile_keys)
def test_hostile_key_cycled_or_saved_unread_gets_a_fresh_key(engine, r, key):
    """cycle_key or an empty save straight after SessionStore(hostile) creates one new
    session under a key of ours, never under the hostile one."""
    start_clean(r, engine)
    cycled = engine(key)
    cycled.cycle_key()
    saved = engine(key)
    saved.save()
    assert {cycled.session_key, saved.session_key}.isdisjoint({key, None})
    assert cycled.session_key != saved.session_key
    assert all(map(is_valid_session_key, (cycled.session_key, saved.session_key)))
    assert session_hashes(r) == {redis_key_of(cycled.session_key), redis_key_of(saved.session_key)}


async def test_load_without_a_key_is_empty(engine, r):
    """load() and aload() on a session whose hostile key was dropped return an empty
    session, as Django's own engines do, without a Redis command."""
    r.config_resetstat()
    assert await sync_to_async(engine("{tag}*").load)() == {}
    assert await engine("\x00" * 32).aload() == {}
    assert commands_since_reset(r) == {}


# -- over HTTP ----------------------------------------------------------------------
def read_with_cookie(client, raw, path="/get/cart/"):
    """A request whose Cookie header is ``sessionid=<raw>``, byte for byte."""
    return client.get(path, HTTP_COOKIE=f"{settings.SESSION_COOKIE_NAME}={raw}")


def assert_nothing_happened(response, raw):
    name = settings.SESSION_COOKIE_NAME
    assert response.status_code == 200, repr(raw)
    assert response.json() == {"value": None}, repr(raw)
    # Django's middleware may expire the cookie; it never sets one.
    assert name not in response.cookies or response.cookies[name].value == "", repr(raw)


def test_a_raw_cookie_header_reaches_the_session(engine, r):
    """The fuzz's way of sending cookies (a raw header) does reach the session middleware."""
    session = engine()
    session["cart"] = "control"
    session.save()
    client = Client()
    for path in ("/get/cart/", "/async/get/cart/"):
        assert read_with_cookie(client, session.session_key, path).json() == {"value": "control"}


def test_ten_thousand_hostile_cookies_reach_nothing(engine, r):
    """10,000 distinct hostile session cookies, on sync and async read-only views: never
    a 500, never a session cookie set, no command reaches Redis, no key, no query."""
    client = Client(raise_request_exception=False)
    r.config_resetstat()
    sent = 0
    with CaptureQueriesContext(connection) as queries:
        cookies = hostile_cookie_values(FUZZ_COOKIES, settings.SESSION_COOKIE_NAME)
        for sent, raw in enumerate(cookies, start=1):
            path = "/async/get/cart/" if sent % 4 == 0 else "/get/cart/"
            assert_nothing_happened(read_with_cookie(client, raw, path), raw)
    assert sent == FUZZ_COOKIES
    assert commands_since_reset(r) == {}
    assert r.dbsize() == 0
    assert len(queries) == 0


@hypothesis_settings(CI, max_examples=300)
@given(raw=hostile_cookies(settings.SESSION_COOKIE_NAME))
def test_hostile_cookie_property_over_http(engine, r, raw):
    """Any hostile cookie on a read-only page: a 200, no session cookie, nothing in Redis."""
    r.config_resetstat()
    assert_nothing_happened(read_with_cookie(Client(raise_request_exception=False), raw), raw)
    assert commands_since_reset(r) == {}
    assert r.dbsize() == 0


def test_hostile_cookies_on_a_write_get_fresh_keys(engine, r):
    """A request that writes, under a hostile cookie, gets a new key of ours and exactly
    one new session: never the client's value, never a second session."""
    name = settings.SESSION_COOKIE_NAME
    client = Client(raise_request_exception=False)
    issued: list[str] = []
    for raw in hostile_cookie_values(FUZZ_WRITES, name, seed=60):
        response = client.get("/set/cart/1/", HTTP_COOKIE=f"{name}={raw}")
        assert response.status_code == 200, repr(raw)
        new_key = response.cookies[name].value
        assert is_valid_session_key(new_key)
        assert new_key != raw
        issued.append(new_key)
    assert len(set(issued)) == FUZZ_WRITES
    assert session_hashes(r) == {redis_key_of(key) for key in issued}
    if engine.__module__.endswith("hybrid"):
        assert DurableSession.objects.count() == FUZZ_WRITES
