"""Each session records the IP address and device of its latest request."""

from __future__ import annotations

import time

import pytest
from django.test import Client, RequestFactory

from elastic_sessions.client import (
    CLIENT_FIELD,
    RequestClient,
    client_ip,
    decode_client,
    request_client,
)
from elastic_sessions.keys import storage_id
from elastic_sessions.models import DurableSession

from .contract import redis_key_of

CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def request(remote="192.0.2.1", forwarded=None, agent=CHROME):
    meta = {"REMOTE_ADDR": remote, "HTTP_USER_AGENT": agent}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **meta)


@pytest.mark.parametrize(
    "case",
    [
        (0, "192.0.2.1", "203.0.113.9", "192.0.2.1"),  # no proxy: the header is the client's
        (1, "10.0.0.2", "203.0.113.9", "203.0.113.9"),
        (1, "10.0.0.2", "6.6.6.6, 203.0.113.9", "203.0.113.9"),  # a spoofed hop is ignored
        (2, "10.0.0.2", "6.6.6.6, 203.0.113.9, 10.0.0.1", "203.0.113.9"),
        (2, "10.0.0.2", "203.0.113.9", "10.0.0.2"),  # bypassed a proxy: REMOTE_ADDR
        (1, "10.0.0.2", "not-an-ip", None),
        (1, "10.0.0.2", " 2001:db8::1 ", "2001:db8::1"),
        (0, "", None, None),
        (0, "999.1.1.1", None, None),
    ],
)
def test_client_ip_trusts_exactly_proxy_count_proxies(settings, elastic_redis, case):
    """The recorded address is the one the outermost trusted proxy saw, never a client's claim."""
    proxies, remote, forwarded, expected = case
    settings.ELASTIC_SESSIONS = {"REDIS_URL": elastic_redis.url, "PROXY_COUNT": proxies}
    assert client_ip(request(remote, forwarded)) == expected


@pytest.mark.parametrize("ip", [None, "192.0.2.1", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"])
@pytest.mark.parametrize("agent", ["", CHROME, "x" * 512, "\x00\ud800 é 🦊" * 40])
def test_stamp_round_trips_within_64_bytes(ip, agent):
    """A stamp decodes to its time, address and device and never exceeds 64 bytes."""
    client = RequestClient(ip, agent)
    raw = client.stamp(1_800_000_000)
    assert len(raw) <= 64
    record = decode_client(raw)
    assert record is not None
    assert (record.last_seen, record.ip) == (1_800_000_000, ip)
    assert client.matches(raw)
    assert not RequestClient(ip, agent + "!").matches(raw)
    assert not RequestClient("198.51.100.1", agent).matches(raw)


@pytest.mark.parametrize("raw", [None, b"", b"\x00", b"\x00\x00\x00\x00\x07abc", b"\xff" * 80])
def test_unreadable_stamps_decode_to_none_or_safely(raw):
    """A stored field of the wrong shape never raises: it reads as no client."""
    record = decode_client(raw)
    assert record is None or isinstance(record.device, str)
    assert not RequestClient("192.0.2.1", CHROME).matches(raw)


def test_request_client_caps_the_user_agent():
    """Only the first 512 characters of a user agent are kept in memory."""
    assert len(request_client(request(agent="A" * 10_000)).user_agent) == 512


def test_middleware_records_the_client_on_save_and_on_a_new_address(elastic_redis):
    """A save stores the client; a request from a new address updates it without a data write."""
    browser = Client(REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT=FIREFOX)
    browser.get("/set/a/1/")
    key = redis_key_of(browser.cookies["sessionid"].value)
    r = elastic_redis.client()
    first = decode_client(r.hget(key, CLIENT_FIELD))
    assert first is not None
    assert (first.ip, first.device) == ("198.51.100.7", "Firefox 128 on Linux")
    moved = Client(REMOTE_ADDR="203.0.113.50", HTTP_USER_AGENT=FIREFOX)
    moved.cookies = browser.cookies
    assert moved.get("/get/a/").json() == {"value": "1"}
    r.ping()  # the update is sent without waiting; its reply is read before reuse
    moved_record = decode_client(r.hget(key, CLIENT_FIELD))
    assert moved_record is not None and moved_record.ip == "203.0.113.50"
    assert r.hget(key, "\x01a") == b"1"  # the data itself was not rewritten


def test_last_seen_follows_use_at_touch_granularity(settings, elastic_redis):
    """With TOUCH_INTERVAL 1, a read two seconds later moves last seen forward."""
    settings.ELASTIC_SESSIONS = {"REDIS_URL": elastic_redis.url, "TOUCH_INTERVAL": 1}
    browser = Client(REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT=FIREFOX)
    browser.get("/set/a/1/")
    key = redis_key_of(browser.cookies["sessionid"].value)
    r = elastic_redis.client()
    before = decode_client(r.hget(key, CLIENT_FIELD))
    time.sleep(2.1)
    browser.get("/get/a/")
    r.ping()
    after = decode_client(r.hget(key, CLIENT_FIELD))
    assert before is not None and after is not None
    assert after.last_seen >= before.last_seen + 2


def test_unchanged_request_writes_nothing(elastic_redis):
    """A read soon after a save, from the same client, sends no client update."""
    browser = Client(REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT=FIREFOX)
    browser.get("/set/a/1/")
    r = elastic_redis.client()
    r.config_resetstat()
    browser.get("/get/a/")
    stats = r.info("commandstats")
    assert "cmdstat_hset" not in stats and "cmdstat_eval" not in stats
    assert "cmdstat_zadd" not in stats


@pytest.mark.django_db
@pytest.mark.database
def test_hybrid_records_the_client_durably(settings, elastic_redis):
    """The hybrid engine keeps last seen and the client in its database row."""
    settings.SESSION_ENGINE = "elastic_sessions.backends.hybrid"
    browser = Client(REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT=CHROME)
    browser.get("/set/a/1/")
    row = DurableSession.objects.get(pk=storage_id(browser.cookies["sessionid"].value))
    record = decode_client(bytes(row.client) if row.client is not None else None)
    assert record is not None
    assert (record.ip, record.device) == ("198.51.100.7", "Chrome 131 on macOS")
    assert row.last_seen is not None and abs(row.last_seen - time.time()) < 5
