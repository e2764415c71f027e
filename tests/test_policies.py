"""The optional session policies, through real requests on both engines: the
session limit, binding to browser and network, staff timeouts, and rotation
when a signed-in user's privileges change."""

from __future__ import annotations

import logging
import threading
import time
from importlib import import_module

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.db import connection, connections
from django.db.models import F
from django.test import AsyncClient, Client
from django.test.utils import CaptureQueriesContext

from elastic_sessions import api
from elastic_sessions.codec import META_FIELD, SessionMeta
from elastic_sessions.exceptions import SessionLimitExceeded
from elastic_sessions.keys import storage_id
from elastic_sessions.models import DurableSession
from elastic_sessions.policies import LOGIN_CLAIM_SECONDS, enforce_session_limit
from elastic_sessions.signals import session_revoked
from elastic_sessions.storage import database
from elastic_sessions.storage.database import DatabaseSessionStorage
from elastic_sessions.storage.redis import RedisSessionStorage, WritePlan

from .contract import redis_key_of

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.database]

COOKIE = django_settings.SESSION_COOKIE_NAME
DAY = 24 * 3600


@pytest.fixture(params=["redis", "hybrid"])
def engine(request, settings):
    """Each test runs on both engines, with the policy views' URLs."""
    settings.SESSION_ENGINE = f"elastic_sessions.backends.{request.param}"
    settings.ROOT_URLCONF = "tests.policy_urls"
    return request.param


@pytest.fixture
def r(elastic_redis):
    return elastic_redis.client()


@pytest.fixture
def policy(settings, engine):
    """Set ELASTIC_SESSIONS keys on top of the test server's URL."""

    def apply(**values):
        settings.ELASTIC_SESSIONS = {**settings.ELASTIC_SESSIONS, **values}

    return apply


def signed_in(username="alice", **client_options):
    client = Client(**client_options)
    response = client.get(f"/login/{username}/")
    assert response.status_code == 200
    return client


def key_of(client):
    return client.cookies[COOKIE].value


def user_of(client, **extra):
    return client.get("/whoami/", **extra).json()["user"]


def session_exists(key):
    return import_module(django_settings.SESSION_ENGINE).SessionStore().exists(key)


def meta_of(r, key):
    return SessionMeta.decode(r.hget(redis_key_of(key), META_FIELD))


def make_older(r, key, seconds):
    """Move a session's creation time back, in Redis and (hybrid) in its row."""
    meta = meta_of(r, key)
    older = SessionMeta(meta.created - seconds, meta.deadline, meta.idle)
    r.hset(redis_key_of(key), META_FIELD, older.encode())
    DurableSession.objects.filter(pk=storage_id(key)).update(created=F("created") - seconds)


def alice():
    return get_user_model().objects.get(username="alice")


# -- the session limit ----------------------------------------------------------
def test_evict_oldest_ends_the_oldest_session_and_signs_that_browser_out(policy, r, caplog):
    """Past MAX_SESSIONS_PER_USER a login ends the oldest session, which is signed out."""
    policy(MAX_SESSIONS_PER_USER=2)
    first, second = signed_in(), signed_in()
    oldest = key_of(first)
    make_older(r, oldest, 100)
    revoked = []

    def receiver(**kwargs):
        revoked.append(kwargs)

    session_revoked.connect(receiver)
    caplog.set_level(logging.INFO, logger="django.security.SessionLimitExceeded")
    try:
        third = signed_in()
    finally:
        session_revoked.disconnect(receiver)
    assert not session_exists(oldest)
    assert user_of(first) is None
    assert user_of(second) == user_of(third) == "alice"
    listed = {info.storage_id for info in api.list_sessions(alice())}
    assert listed == {storage_id(key_of(second)), storage_id(key_of(third))}
    assert [kwargs["storage_ids"] for kwargs in revoked] == [[storage_id(oldest)]]
    [record] = [rec for rec in caplog.records if rec.name == "django.security.SessionLimitExceeded"]
    assert record.levelno == logging.INFO
    assert oldest not in record.getMessage()


def test_evict_oldest_never_ends_the_session_signing_in(policy, r):
    """The session that signs in is never evicted, even when it is the oldest."""
    first, second = signed_in(), signed_in()
    make_older(r, key_of(first), 100)
    policy(MAX_SESSIONS_PER_USER=1)
    assert first.get("/login/alice/").status_code == 200  # signs in again, same session
    assert user_of(first) == "alice"
    assert user_of(second) is None
    assert [info.storage_id for info in api.list_sessions(alice())] == [storage_id(key_of(first))]


def test_deny_answers_403_and_keeps_the_old_sessions(policy, r, caplog):
    """Under "deny" a login past the limit is a 403 that leaves no session or cookie."""
    policy(MAX_SESSIONS_PER_USER=1, SESSION_LIMIT_POLICY="deny")
    first = signed_in()
    late = Client()
    late.get("/set/cart/3/")
    anonymous_key = key_of(late)
    caplog.set_level(logging.INFO, logger="django.security.SessionLimitExceeded")
    response = late.get("/login/alice/")
    assert response.status_code == 403
    assert response.cookies[COOKIE].value == ""  # the browser's cookie is deleted
    assert not session_exists(anonymous_key)
    assert user_of(late) is None
    assert user_of(first) == "alice"
    assert [info.storage_id for info in api.list_sessions(alice())] == [storage_id(key_of(first))]
    # Nothing but the first session is stored, in either store (the hybrid
    # leaves fences, hashes without metadata, where sessions were deleted).
    stored = [key for key in r.keys("es:{*") if r.hexists(key, META_FIELD)]
    assert stored == [redis_key_of(key_of(first)).encode()]
    assert set(DurableSession.objects.values_list("pk", flat=True)) <= {storage_id(key_of(first))}
    records = [rec for rec in caplog.records if rec.name == "django.security.SessionLimitExceeded"]
    assert [record.levelno for record in records] == [logging.WARNING]


def test_deny_lets_a_login_within_the_limit_through(policy, r):
    """Under "deny" logins up to the limit succeed and stay signed in, with the
    site's expiry: the short-lived place each login claims first is not kept."""
    policy(MAX_SESSIONS_PER_USER=2, SESSION_LIMIT_POLICY="deny")
    first, second = signed_in(), signed_in()
    assert user_of(first) == user_of(second) == "alice"
    assert len(api.list_sessions(alice())) == 2
    age = django_settings.SESSION_COOKIE_AGE
    for client in (first, second):
        assert r.ttl(redis_key_of(key_of(client))) > age - 60 > LOGIN_CLAIM_SECONDS
        assert client.get("/expiry/").json()["age"] == age


def test_deny_claim_of_a_login_that_never_completes_expires_soon(policy, engine, r):
    """A login that fails after the count (its response never saves) leaves its
    claimed place for LOGIN_CLAIM_SECONDS, not for the session's whole life."""
    policy(MAX_SESSIONS_PER_USER=2, SESSION_LIMIT_POLICY="deny")
    existing = signed_in()
    user = alice()
    session = import_module(django_settings.SESSION_ENGINE).SessionStore()
    session.create()
    session[SESSION_KEY] = str(user.pk)
    enforce_session_limit(session, user)  # then the view fails: no response save
    key = session.session_key
    listed = {info.storage_id for info in api.list_sessions(user)}
    assert listed == {storage_id(key_of(existing)), storage_id(key)}
    assert 0 < r.ttl(redis_key_of(key)) <= LOGIN_CLAIM_SECONDS
    if engine == "hybrid":
        row = DurableSession.objects.get(pk=storage_id(key))
        assert row.expires_at <= time.time() + LOGIN_CLAIM_SECONDS


def test_deny_holds_the_limit_when_logins_race(policy, engine, database_vendor):
    """Eight logins of one user at the same instant, under "deny" with room for two
    more: never more than two get in, and the store holds exactly those that did."""
    if engine == "hybrid" and database_vendor == "sqlite":
        pytest.skip("pytest-django's in-memory SQLite locks whole tables across threads")
    policy(MAX_SESSIONS_PER_USER=3, SESSION_LIMIT_POLICY="deny")
    existing = signed_in()
    user = alice()
    store_class = import_module(django_settings.SESSION_ENGINE).SessionStore
    start = threading.Barrier(8)
    outcomes: dict[str, str] = {}

    def log_in() -> None:
        try:
            session = store_class()
            session.create()  # the browser's session before login() cycles it
            session[SESSION_KEY] = str(user.pk)
            key = session.session_key
            assert key is not None
            start.wait(timeout=10)
            try:
                enforce_session_limit(session, user)
            except SessionLimitExceeded:
                outcomes[key] = "denied"
                return
            session.save()  # the login response's save
            outcomes[key] = "signed in"
        finally:
            connections.close_all()

    threads = [threading.Thread(target=log_in) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(outcomes) == 8  # every login finished, one way or the other
    admitted = {key for key, outcome in outcomes.items() if outcome == "signed in"}
    assert len(admitted) <= 2
    listed = {info.storage_id for info in api.list_sessions(user)}
    assert listed == {storage_id(key) for key in {key_of(existing), *admitted}}
    assert user_of(existing) == "alice"


# -- binding ------------------------------------------------------------------
def test_user_agent_binding_ends_a_session_replayed_from_another_browser(policy, caplog):
    """A cookie used with another user agent ends the session for thief and owner alike."""
    policy(BIND_USER_AGENT=True)
    owner = signed_in(HTTP_USER_AGENT="Firefox/128")
    key = key_of(owner)
    assert user_of(owner) == "alice"
    thief = Client(HTTP_USER_AGENT="Chrome/126")
    thief.cookies[COOKIE] = key
    caplog.set_level(logging.WARNING, logger="django.security.SessionBindingMismatch")
    answer = thief.get("/swap/k/v/").json()
    assert answer == {"before": None, "user": None}
    assert key_of(thief) != key  # a new, anonymous session
    assert not session_exists(key)
    assert user_of(owner) is None
    assert api.list_sessions(alice()) == []
    [record] = [
        rec for rec in caplog.records if rec.name == "django.security.SessionBindingMismatch"
    ]
    assert "user agent" in record.getMessage()
    assert key not in record.getMessage()


async def test_binding_is_checked_on_async_loads(policy):
    """An async view's load ends a session replayed from another browser too."""
    policy(BIND_USER_AGENT=True)
    owner = await sync_to_async(signed_in)(HTTP_USER_AGENT="Firefox/128")
    key = key_of(owner)
    thief = AsyncClient(HTTP_USER_AGENT="Chrome/126")
    thief.cookies[COOKIE] = key
    response = await thief.get("/async/get/_auth_user_id/")
    assert response.json() == {"value": None}
    assert not await sync_to_async(session_exists)(key)


@pytest.mark.parametrize(
    ("prefixes", "login_ip", "inside", "outside"),
    [
        ({"BIND_IPV4_PREFIX": 24}, "203.0.113.10", "203.0.113.77", "198.51.100.10"),
        ({"BIND_IPV6_PREFIX": 64}, "2001:db8:1:2::10", "2001:db8:1:2::99", "2001:db8:1:3::10"),
        # Another family is outside: an IPv4 login (unbound family) may not move to IPv6.
        ({"BIND_IPV6_PREFIX": 64}, "203.0.113.10", "198.51.100.7", "2001:db8::1"),
        ({"BIND_IPV4_PREFIX": 24}, "::ffff:203.0.113.10", "203.0.113.77", "2001:db8::1"),
    ],
)
def test_network_binding_keeps_the_network_and_ends_outside_it(
    policy, prefixes, login_ip, inside, outside
):
    """A bound session continues from inside its network and ends outside it."""
    policy(**prefixes)
    client = signed_in(REMOTE_ADDR=login_ip)
    key = key_of(client)
    assert user_of(client, REMOTE_ADDR=inside) == "alice"
    assert session_exists(key)
    assert user_of(client, REMOTE_ADDR=outside) is None
    assert not session_exists(key)
    assert user_of(client, REMOTE_ADDR=login_ip) is None


def test_unbound_sessions_follow_their_user_anywhere(policy):
    """Without binding settings a session works from any browser and address."""
    client = signed_in(HTTP_USER_AGENT="Firefox/128", REMOTE_ADDR="203.0.113.10")
    assert user_of(client, HTTP_USER_AGENT="Chrome/1", REMOTE_ADDR="198.51.100.1") == "alice"


# -- staff timeouts -------------------------------------------------------------
def staff_signed_in():
    get_user_model().objects.create(username="root", is_staff=True)
    return signed_in("root")


def test_staff_idle_timeout_shortens_the_expiry_everywhere(policy, engine, r):
    """STAFF_IDLE_TIMEOUT sets a staff session's cookie, TTL and durable expiry."""
    policy(STAFF_IDLE_TIMEOUT=300)
    client = staff_signed_in()
    key = key_of(client)
    assert 295 <= int(client.cookies[COOKIE]["max-age"]) <= 300
    assert 295 <= client.get("/expiry/").json()["age"] <= 300
    assert 295_000 <= r.pttl(redis_key_of(key)) <= 300_000
    assert meta_of(r, key).idle == 300
    if engine == "hybrid":
        row = DurableSession.objects.get(pk=storage_id(key))
        assert row.idle == 300
        assert 295 <= row.expires_at - time.time() <= 301
    # Everyone else keeps the site's age.
    other = signed_in()
    assert int(other.cookies[COOKIE]["max-age"]) > 300


def test_staff_absolute_timeout_caps_the_deadline_and_touches_stay_under_it(policy, engine, r):
    """STAFF_ABSOLUTE_TIMEOUT caps the deadline, and neither a touch nor a save passes it."""
    policy(STAFF_ABSOLUTE_TIMEOUT=120, TOUCH_INTERVAL=0)
    client = staff_signed_in()
    key = key_of(client)
    cap = int(time.time()) + 120
    assert 115 <= int(client.cookies[COOKIE]["max-age"]) <= 120
    assert cap - 2 <= meta_of(r, key).deadline <= cap
    assert r.pttl(redis_key_of(key)) <= 120_000
    if engine == "hybrid":
        row = DurableSession.objects.get(pk=storage_id(key))
        assert cap - 2 <= row.deadline <= cap
        assert row.expires_at <= cap
    # A load slides the expiry, but only up to the deadline.
    r.pexpire(redis_key_of(key), 10_000)
    assert client.get("/expiry/").json()["age"] <= 120
    assert 100_000 <= r.pttl(redis_key_of(key)) <= 120_000
    # A save keeps the capped deadline too.
    client.get("/set/a/1/")
    assert meta_of(r, key).deadline <= cap
    assert r.pttl(redis_key_of(key)) <= 120_000
    if engine == "hybrid":
        assert DurableSession.objects.get(pk=storage_id(key)).expires_at <= cap


def test_staff_timeouts_never_loosen_a_stricter_session(policy, settings, r):
    """Staff timeouts longer than the site's own leave the expiry and deadline alone."""
    settings.SESSION_COOKIE_AGE = 100
    policy(ABSOLUTE_TIMEOUT=60, STAFF_IDLE_TIMEOUT=300, STAFF_ABSOLUTE_TIMEOUT=600)
    client = staff_signed_in()
    key = key_of(client)
    assert int(client.cookies[COOKIE]["max-age"]) <= 60
    assert meta_of(r, key).deadline <= int(time.time()) + 60
    assert meta_of(r, key).idle == 100
    assert r.pttl(redis_key_of(key)) <= 60_000


# -- privilege changes ------------------------------------------------------------
def test_privilege_change_rotates_the_key_keeping_data_and_index(policy, caplog):
    """Promoting a signed-in user to staff moves the session to a new key on its next use."""
    client = signed_in()
    client.get("/set/cart/3/")
    old_key = key_of(client)
    get_user_model().objects.filter(username="alice").update(is_staff=True)
    caplog.set_level(logging.INFO, logger="django.security.PrivilegeChange")
    assert user_of(client) == "alice"
    new_key = key_of(client)
    assert new_key != old_key
    assert not session_exists(old_key)
    assert client.get("/get/cart/").json() == {"value": "3"}
    assert [info.storage_id for info in api.list_sessions(alice())] == [storage_id(new_key)]
    stolen = Client()
    stolen.cookies[COOKIE] = old_key
    assert user_of(stolen) is None
    [record] = [rec for rec in caplog.records if rec.name == "django.security.PrivilegeChange"]
    assert record.levelno == logging.INFO
    assert old_key not in record.getMessage()
    # Once rotated, the next requests keep the new key.
    assert user_of(client) == "alice"
    assert key_of(client) == new_key


def test_privilege_change_applies_the_staff_timeouts(policy, r):
    """A user promoted to staff mid-session gets the staff idle timeout with the new key."""
    policy(STAFF_IDLE_TIMEOUT=300)
    client = signed_in()
    assert int(client.cookies[COOKIE]["max-age"]) > 300
    get_user_model().objects.filter(username="alice").update(is_superuser=True, is_staff=True)
    user_of(client)
    assert 295 <= int(client.cookies[COOKIE]["max-age"]) <= 300
    assert meta_of(r, key_of(client)).idle == 300


async def test_privilege_change_seen_by_an_async_view_rotates_the_key(policy):
    """An async view that reads the user with auser() rotates the key on a change too."""
    client = await sync_to_async(signed_in)()
    old_key = key_of(client)
    await get_user_model().objects.filter(username="alice").aupdate(is_staff=True)
    async_client = AsyncClient()
    async_client.cookies[COOKIE] = old_key
    response = await async_client.get("/async/whoami/")
    assert response.json() == {"user": "alice"}
    assert response.cookies[COOKIE].value not in {"", old_key}
    assert not await sync_to_async(session_exists)(old_key)


def test_requests_that_never_read_the_user_cost_no_user_query(policy):
    """A request that does not read request.user neither queries the user nor rotates."""
    client = signed_in()
    key = key_of(client)
    get_user_model().objects.filter(username="alice").update(is_staff=True)
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/expiry/")
    assert response.json()["user"] is not None
    assert not [q for q in queries.captured_queries if "auth_user" in q["sql"]]
    assert COOKIE not in response.cookies
    assert key_of(client) == key


def test_deactivated_user_loses_the_session(policy):
    """A user deactivated mid-session is signed out and the session is deleted."""
    client = signed_in()
    key = key_of(client)
    get_user_model().objects.filter(username="alice").update(is_active=False)
    response = client.get("/whoami/")
    assert response.json() == {"user": None}
    assert response.cookies[COOKIE].value == ""
    assert not session_exists(key)
    assert api.list_sessions(alice()) == []


def test_deactivated_user_loses_the_session_under_a_backend_that_allows_inactive(policy, settings):
    """Where the auth backend still accepts an inactive user, the policy ends the session."""
    settings.AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.AllowAllUsersModelBackend"]
    client = Client()
    get_user_model().objects.create(username="alice")
    client.force_login(alice(), backend=settings.AUTHENTICATION_BACKENDS[0])
    key = key_of(client)
    get_user_model().objects.filter(username="alice").update(is_active=False)
    client.get("/whoami/")
    assert not session_exists(key)


# -- the deadline cap in the stores --------------------------------------------------
@pytest.mark.parametrize("path", ["returning", "orm"])
def test_database_write_lowers_the_deadline_to_the_cap_and_never_raises_it(path, monkeypatch):
    """A durable write with a deadline cap lowers the row's deadline and expiry, never raises."""
    if path == "orm":  # the fallback for databases whose UPDATE cannot return the row
        monkeypatch.setattr(database, "_LEAST", {})
    store, sid, now = DatabaseSessionStorage(), storage_id("a" * 32), int(time.time())

    def write(create, cap):
        values = {"create": create, "idle": DAY, "absolute": 30 * DAY, "fixed_expiry": 0}
        plan = WritePlan(**values, sets={b"a": b"1"}, deletes=[], deadline_cap=cap)
        return store.write(sid, plan, invalidate_redis=False)

    assert write(True, 0).meta.deadline >= now + 30 * DAY
    capped = write(False, now + 600)
    assert capped.meta.deadline == now + 600
    assert capped.expires_at == now + 600
    assert write(False, now + 900).meta.deadline == now + 600
    row = DurableSession.objects.get(pk=sid)
    assert (row.deadline, row.expires_at) == (now + 600, now + 600)


def test_redis_save_lowers_the_deadline_to_the_cap_and_never_raises_it(r):
    """The SAVE script caps the deadline (and so the TTL) on create and update alike."""
    storage, sid, now = RedisSessionStorage(), storage_id("b" * 32), int(time.time())

    def write(create, cap):
        values = {"create": create, "idle": DAY, "absolute": 30 * DAY, "fixed_expiry": 0}
        return storage.write(sid, WritePlan(**values, sets={}, deletes=[], deadline_cap=cap))

    assert now + 600 - 1 <= write(True, now + 600).meta.deadline <= now + 600
    assert 590_000 <= r.pttl(redis_key_of("b" * 32)) <= 600_000
    assert write(False, now + 900).meta.deadline <= now + 600
    assert write(False, now + 300).meta.deadline == now + 300
    assert r.pttl(redis_key_of("b" * 32)) <= 300_000


def test_signing_in_again_as_the_same_user_rotates_the_key(engine):
    """Django keeps the key when the same user signs in again; the package rotates it anyway."""
    client = Client()
    client.get("/login/alice/")
    client.get("/set/cart/3/")
    first = client.cookies[COOKIE].value
    client.get("/login/alice/")
    second = client.cookies[COOKIE].value
    assert second != first
    assert client.get("/get/cart/").json() == {"value": "3"}
    user = get_user_model().objects.get(username="alice")
    assert [info.storage_id for info in api.list_sessions(user)] == [storage_id(second)]
    stale = Client()
    stale.cookies[COOKIE] = first
    assert stale.get("/get/cart/").json() == {"value": None}
