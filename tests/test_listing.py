"""elastic_sessions.listing: every session, page by page, on both engines."""

from __future__ import annotations

import time
from importlib import import_module

import pytest
from django.contrib.auth import SESSION_KEY
from django.test import Client

from elastic_sessions import listing
from elastic_sessions.client import CLIENT_FIELD, decode_client
from elastic_sessions.keys import listing_redis_keys, storage_id, user_index_redis_key

from .contract import redis_key_of

pytestmark = [pytest.mark.django_db, pytest.mark.database]

FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


@pytest.fixture(params=["redis", "hybrid"])
def engine(request, settings):
    settings.SESSION_ENGINE = f"elastic_sessions.backends.{request.param}"
    return request.param


def sign_in(username, ip="198.51.100.7", agent=FIREFOX):
    client = Client(REMOTE_ADDR=ip, HTTP_USER_AGENT=agent)
    assert client.get(f"/login/{username}/").status_code == 200
    return client


def sid_of(client):
    return storage_id(client.cookies["sessionid"].value)


def test_rows_carry_user_ip_device_and_times(engine):
    """A signed-in request's IP, device and times show in the list and the detail."""
    client = sign_in("ana", ip="2001:db8::1", agent=IPHONE)
    page = listing.list_page(listing.ListQuery(), 1)
    assert page.total == 1
    [row] = page.rows
    assert row.storage_id == sid_of(client)
    assert row.ip == "2001:db8::1"
    assert row.device == "Safari 17 on iOS"
    assert row.user_id is not None
    assert row.created is not None and row.last_seen is not None and row.expires is not None
    assert row.created <= row.last_seen < row.expires
    assert row.size > 0
    assert row.store == ("redis" if engine == "redis" else "database")
    found = listing.detail(row.storage_id)
    assert found is not None
    assert found.data is not None
    assert found.data[SESSION_KEY] == row.user_id


def test_pages_are_ordered_and_bounded(engine, settings):
    """Pages hold per_page rows in last-seen order; a page past the end is the last one."""
    clients = [sign_in(f"user{n}") for n in range(5)]
    # Seen in reverse order of sign-in: each request moves its session to the front.
    for client in reversed(clients):
        time.sleep(1.05)
        client.get("/set/seen/1/")
    first = listing.list_page(listing.ListQuery(order="-last_seen"), 1, per_page=2)
    assert first.total == 5 and first.num_pages == 3 and first.has_next
    assert [row.storage_id for row in first.rows] == [sid_of(clients[0]), sid_of(clients[1])]
    last = listing.list_page(listing.ListQuery(order="-last_seen"), 99, per_page=2)
    assert last.number == 3
    assert [row.storage_id for row in last.rows] == [sid_of(clients[4])]
    oldest = listing.list_page(listing.ListQuery(order="last_seen"), 1, per_page=1)
    assert [row.storage_id for row in oldest.rows] == [sid_of(clients[4])]


def test_filters_expiring_idle_and_user(engine, settings):
    """Expiring-soon, idle-for and per-user filters each select the right sessions."""
    settings.SESSION_COOKIE_AGE = 7200
    ana, bob = sign_in("ana"), sign_in("bob")
    short = import_module(settings.SESSION_ENGINE).SessionStore()
    short["cart"] = [1]
    short.set_expiry(600)
    short.save()
    expiring = listing.list_page(listing.ListQuery(expiring_within=1800), 1)
    assert [row.storage_id for row in expiring.rows] == [storage_id(short.session_key)]
    assert expiring.order == "expires"
    idle = listing.list_page(listing.ListQuery(idle_for=3600), 1)
    assert idle.rows == [] and idle.total == 0
    assert listing.list_page(listing.ListQuery(idle_for=0), 1).total == 3
    ana_detail = listing.detail(sid_of(ana))
    assert ana_detail is not None
    ana_id = ana_detail.row.user_id
    mine = listing.list_page(listing.ListQuery(user_ids=(ana_id,)), 1)
    assert [row.storage_id for row in mine.rows] == [sid_of(ana)]
    assert listing.list_page(listing.ListQuery(user_ids=()), 1).total == 0
    counts = listing.counts()
    assert (counts.active, counts.expiring_soon, counts.idle) == (3, 1, 0)
    assert sid_of(bob) in {row.storage_id for row in listing.list_page(listing.ListQuery(), 1).rows}


def test_revoke_ends_sessions_of_anyone_and_reports_owners(engine):
    """revoke() ends the chosen sessions, whoever owns them; the browsers are signed out."""
    ana, bob, carl = sign_in("ana"), sign_in("bob"), sign_in("carl")
    ended = listing.revoke([sid_of(ana), sid_of(bob), "not-a-storage-id", sid_of(ana)])
    assert {sid for sid, _ in ended} == {sid_of(ana), sid_of(bob)}
    assert all(owner is not None for _, owner in ended)
    assert ana.get("/get/_auth_user_id/").json() == {"value": None}
    assert carl.get("/get/_auth_user_id/").json() != {"value": None}
    assert [row.storage_id for row in listing.list_page(listing.ListQuery(), 1).rows] == [
        sid_of(carl)
    ]
    assert listing.revoke([sid_of(ana)]) == []
    assert listing.detail(sid_of(ana)) is None
    assert listing.detail("../../etc") is None


def test_client_field_fits_a_listpack_value(elastic_redis):
    """The stored client field stays within 64 bytes, so small sessions stay compact."""
    long_agent = "Mozilla/5.0 (Linux; Android 14) " + "X" * 600 + " SamsungBrowser/26.0"
    client = sign_in("ana", ip="2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", agent=long_agent)
    r = elastic_redis.client()
    raw = r.hget(redis_key_of(client.cookies["sessionid"].value), CLIENT_FIELD)
    assert raw is not None and len(raw) <= 64
    record = decode_client(raw)
    assert record is not None and record.ip == "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"
    assert r.object("encoding", redis_key_of(client.cookies["sessionid"].value)) == b"listpack"


def test_expired_and_deleted_sessions_leave_the_listing(elastic_redis):
    """Entries of sessions gone from Redis are pruned by the next page read."""
    gone, kept = sign_in("ana"), sign_in("bob")
    r = elastic_redis.client()
    r.delete(redis_key_of(gone.cookies["sessionid"].value))
    rows = listing.list_page(listing.ListQuery(), 1).rows
    assert [row.storage_id for row in rows] == [sid_of(kept)]
    seen, expiry = listing_redis_keys()
    r.ping()  # the fire-and-forget prune is read before the connection's next use
    assert r.zscore(seen, sid_of(gone)) is None
    assert r.zscore(expiry, sid_of(kept)) is not None


def test_a_logout_takes_the_session_out_of_the_listing(elastic_redis):
    """Logging out deletes the listing entries in the same round trip."""
    client = sign_in("ana")
    sid = sid_of(client)
    client.get("/logout/")
    seen, expiry = listing_redis_keys()
    r = elastic_redis.client()
    assert r.zscore(seen, sid) is None and r.zscore(expiry, sid) is None


def test_wrong_type_listing_set_never_fails_a_request(elastic_redis, caplog):
    """A listing set of the wrong type is reported by the list; requests still work."""
    seen, _ = listing_redis_keys()
    r = elastic_redis.client()
    r.set(seen, "garbage")
    client = sign_in("ana")
    assert client.get("/set/a/1/").status_code == 200
    page = listing.list_page(listing.ListQuery(), 1)
    assert page.rows == [] and page.total == 0
    assert "not a sorted set" in caplog.text


def test_listing_index_off_lists_by_user_only(settings, elastic_redis):
    """With LISTING_INDEX off no listing set is written; the list needs a user."""
    settings.ELASTIC_SESSIONS = {"REDIS_URL": elastic_redis.url, "LISTING_INDEX": False}
    client = sign_in("ana")
    r = elastic_redis.client()
    assert not any(r.exists(key) for key in listing_redis_keys())
    page = listing.list_page(listing.ListQuery(), 1)
    assert page.needs_user and page.rows == []
    assert not listing.counts().available
    detail = listing.detail(sid_of(client))
    assert detail is not None and detail.row.user_id is not None
    mine = listing.list_page(listing.ListQuery(user_ids=(detail.row.user_id,)), 1)
    assert [row.storage_id for row in mine.rows] == [sid_of(client)]


def test_a_user_with_many_sessions_costs_a_bounded_read(elastic_redis):
    """Listing one user reads at most MAX_USER_SESSIONS of their index, however large."""
    client = sign_in("ana")
    found = listing.detail(sid_of(client))
    assert found is not None
    user_id = found.row.user_id
    assert user_id is not None
    r = elastic_redis.client()
    far = int(time.time()) + 3600
    r.zadd(user_index_redis_key(user_id), {f"{n:022d}": far for n in range(5000)})
    r.config_resetstat()
    page = listing.list_page(listing.ListQuery(user_ids=(user_id,)), 1)
    housekeeping = {"cmdstat_info", "cmdstat_config|resetstat", "cmdstat_ping", "cmdstat_hello"}
    calls = sum(
        stats["calls"] for name, stats in r.info("commandstats").items() if name not in housekeeping
    )
    # One bounded index read, then HMGET + PTTL + MEMORY USAGE per session read
    # (and a ZREM pair for the ones found gone).
    assert calls <= 1 + 3 * listing.MAX_USER_SESSIONS + 2
    assert page.total <= 1
