"""Hostile cookies never reach Redis; corrupted stored data never causes a 500."""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.test import Client

from elastic_sessions.backends.redis import SessionStore
from elastic_sessions.keys import storage_id

from .contract import redis_key_of
from .roundtrips import count_round_trips

HOSTILE_KEYS = [
    "",
    "short",
    "a" * 31,
    "a" * 33,
    "A" * 32,  # upper case: never issued
    "a" * 31 + "{",
    "{tag}" + "a" * 27,
    "*" * 32,
    "a" * 30 + "\r\n",
    "a" * 31 + "\x00",
    "é" * 32,
    "a" * 10_000,
    "es:{x}",
    "../../etc/passwd" + "a" * 16,
    "a" * 16 + " " + "a" * 15,
]


@pytest.fixture
def r(elastic_redis):
    return elastic_redis.client()


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_malformed_key_never_reaches_redis(key, r):
    """A malformed key is dropped before any Redis call and never adopted."""
    SessionStore().exists("x" * 32)  # warm the pool
    with count_round_trips() as trips:
        session = SessionStore(key)
        assert session.session_key is None
        assert session.get("anything") is None
        assert not session.exists(key)
        session.delete(key)
    assert trips.count == 0
    session["x"] = 1
    session.save()
    assert session.session_key != key
    # The new session, and no other session key (the listing sets aside).
    assert len(r.keys("es:{*}")) == 1


@pytest.mark.parametrize("key", HOSTILE_KEYS[1:])
def test_malformed_cookie_over_http_gets_fresh_session(key, r):
    """Over HTTP a hostile cookie gets a 200 and, on write, a new key of our own."""
    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = key
    response = client.get("/set/a/1/")
    assert response.status_code == 200
    new_key = response.cookies[settings.SESSION_COOKIE_NAME].value
    assert new_key != key
    # The new session, and no other session key (the listing sets aside).
    assert len(r.keys("es:{*}")) == 1
    assert r.exists(redis_key_of(new_key))


def corrupt_case(r, how):
    session = SessionStore()
    session.update({"a": 1, "name": "x"})
    session.save()
    rkey = redis_key_of(session.session_key)
    if how == "wrong type":
        r.delete(rkey)
        r.set(rkey, b"garbage")
    elif how == "bad json value":
        r.hset(rkey, "a", b"{not json")
    elif how == "bad utf-8 string":
        r.hset(rkey, b"\x01name", b"\xff\xfe")
    elif how == "bad metadata":
        r.hset(rkey, b"\x00", b"yesterday")
    return session.session_key


CORRUPTIONS = ["wrong type", "bad json value", "bad utf-8 string", "bad metadata"]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_session_loads_empty_with_a_log_line(how, r, caplog):
    """A corrupted session loads as a new empty session and logs a warning naming it."""
    key = corrupt_case(r, how)
    with caplog.at_level(logging.WARNING, logger="elastic_sessions"):
        session = SessionStore(key)
        assert dict(session.items()) == {}
    assert session.session_key is None
    record = next(rec for rec in caplog.records if "unreadable session" in rec.getMessage())
    assert record.levelno == logging.WARNING
    assert storage_id(key) in record.getMessage()
    assert key not in record.getMessage()


@pytest.mark.parametrize("how", CORRUPTIONS)
async def test_async_corrupt_session_loads_empty(how, r):
    """The async load treats corrupted data the same way."""
    key = corrupt_case(r, how)
    session = SessionStore(key)
    assert await session.aget("a") is None
    assert session.session_key is None


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_session_over_http_is_not_a_500(how, r):
    """Over HTTP a corrupted session gives a 200 and a new session, never a 500."""
    key = corrupt_case(r, how)
    client = Client(raise_request_exception=False)
    client.cookies[settings.SESSION_COOKIE_NAME] = key
    response = client.get("/set/b/2/")
    assert response.status_code == 200
    assert response.cookies[settings.SESSION_COOKIE_NAME].value != key
    assert client.get("/get/b/").json() == {"value": "2"}
