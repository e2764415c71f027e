"""Behaviour of the redis engine beyond Django's contract: deltas, round trips,
expiry, the user index and what is stored."""

from __future__ import annotations

import struct
import threading
import time

import pytest
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.base import UpdateError

from elastic_sessions.backends.redis import SessionStore
from elastic_sessions.keys import storage_id, user_index_redis_key

from .contract import redis_key_of
from .roundtrips import count_round_trips


@pytest.fixture
def r(elastic_redis):
    return elastic_redis.client()


def saved(**data):
    session = SessionStore()
    session.update(data)
    session.save()
    return session


def warm():
    """Open the pooled connections so counts measure requests, not handshakes."""
    SessionStore().exists("x" * 32)


# -- delta saves --------------------------------------------------------------
def test_two_sessions_changing_different_keys_keep_both_changes():
    """Two requests that change different keys of one session both keep their change."""
    key = saved(a=0, b=0).session_key
    first, second = SessionStore(key), SessionStore(key)
    assert first["a"] == 0
    assert second["b"] == 0
    first["a"] = 1
    second["b"] = 2
    first.save()
    second.save()
    assert dict(SessionStore(key).items()) == {"a": 1, "b": 2}


def test_setting_a_key_back_to_its_loaded_value_after_a_save_is_written():
    """Loaded immutables are skipped only until a save: restoring one is a change."""
    key = saved(theme="dark", n=1).session_key
    session = SessionStore(key)
    original_theme, original_n = session["theme"], session["n"]
    session["theme"], session["n"] = "light", 2
    session.save()
    session["theme"], session["n"] = original_theme, original_n
    session.save()
    assert dict(SessionStore(key).items()) == {"theme": "dark", "n": 1}


def test_unchanged_loaded_values_are_not_rewritten(r):
    """A save after reading small values sends only the key that changed."""
    key = saved(theme="dark", n=1, flags=[1, 2]).session_key
    session = SessionStore(key)
    assert session["theme"] == "dark"
    rkey = redis_key_of(key)
    # Change the stored bytes behind the session's back: a rewrite would undo it.
    r.hset(rkey, b"\x01theme", b"light")
    session["n"] = 2
    session.save()
    assert r.hget(rkey, b"\x01theme") == b"light"
    assert SessionStore(key)["n"] == 2


def test_in_place_mutation_is_saved_when_marked_modified():
    """Mutating a list in place and marking the session modified writes the change."""
    key = saved(cart=[1]).session_key
    session = SessionStore(key)
    session["cart"].append(2)
    session.modified = True
    session.save()
    assert SessionStore(key)["cart"] == [1, 2]


def test_removed_key_is_deleted_and_concurrent_change_survives():
    """A removed key is deleted from the store; a concurrent change to another key stays."""
    key = saved(a=1, b=1).session_key
    remover, changer = SessionStore(key), SessionStore(key)
    del remover["a"]
    changer["b"] = 5
    changer.save()
    remover.save()
    assert dict(SessionStore(key).items()) == {"b": 5}


def test_type_change_of_a_key_leaves_one_field(r):
    """Changing a value between str and non-str never leaves two fields for one key."""
    key = saved(v="text").session_key
    a, b = SessionStore(key), SessionStore(key)
    a["v"] = 7
    b["v"] = "other"
    a.save()
    b.save()
    fields = [f for f in r.hkeys(redis_key_of(key)) if f != b"\x00"]
    assert len(fields) == 1
    assert SessionStore(key)["v"] == "other"


def test_threads_changing_different_keys_lose_no_update():
    """Eight threads each incrementing their own key 50 times lose no update."""
    key = saved().session_key
    rounds, threads = 50, 8
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            for _ in range(rounds):
                session = SessionStore(key)
                session[name] = session.get(name, 0) + 1
                session.save()
        except BaseException as err:  # reported below, the thread must not die silently
            errors.append(err)

    workers = [threading.Thread(target=worker, args=(f"k{i}",)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert errors == []
    assert dict(SessionStore(key).items()) == {f"k{i}": rounds for i in range(threads)}


def test_save_racing_a_delete_never_resurrects(r):
    """A session loaded before a delete and saved after it raises UpdateError, stays gone."""
    key = saved(n=0).session_key
    loaded, deleted = threading.Event(), threading.Event()
    outcome: list[str] = []

    def writer() -> None:
        session = SessionStore(key)
        session["n"] = session["n"] + 1
        loaded.set()
        deleted.wait(5)
        try:
            session.save()
        except UpdateError:
            outcome.append("refused")
        else:
            outcome.append("saved")

    thread = threading.Thread(target=writer)
    thread.start()
    loaded.wait(5)
    SessionStore(key).delete()
    deleted.set()
    thread.join()
    assert outcome == ["refused"]
    assert r.exists(redis_key_of(key)) == 0


def test_writers_racing_a_delete_never_resurrect_the_old_key(r):
    """Under a stream of concurrent writers, the deleted key never comes back."""
    key = saved(n=0).session_key
    stop = threading.Event()
    reappeared: list[bool] = []

    def writer() -> None:
        while not stop.is_set():
            session = SessionStore(key)
            session["n"] = session.get("n", 0) + 1
            try:
                session.save()
            except UpdateError:
                continue

    def watcher() -> None:
        deleted_at = time.monotonic()
        while time.monotonic() - deleted_at < 0.3:
            reappeared.append(bool(r.exists(redis_key_of(key))))

    writers = [threading.Thread(target=writer) for _ in range(3)]
    for thread in writers:
        thread.start()
    time.sleep(0.1)
    SessionStore(key).delete()
    watcher()
    stop.set()
    for thread in writers:
        thread.join()
    assert reappeared and not any(reappeared)


# -- round trips ----------------------------------------------------------------
def test_round_trips_per_operation():
    """Load is 1 round trip, a changed save 1, an unchanged save 0, a create 1."""
    warm()
    with count_round_trips() as create:
        session = saved(a=1, b="x")
    with count_round_trips() as load:
        session = SessionStore(session.session_key)
        assert session["a"] == 1
    with count_round_trips() as unchanged:
        session.save()
    session["a"] = 2
    with count_round_trips() as changed:
        session.save()
    assert (create.count, load.count, unchanged.count, changed.count) == (1, 1, 0, 1)


async def test_async_round_trips_per_operation():
    """The async twins make the same number of round trips as the sync ones."""
    await SessionStore().aexists("x" * 32)
    with count_round_trips() as create:
        session = SessionStore()
        await session.aset("a", 1)
        await session.asave()
    with count_round_trips() as load:
        session = SessionStore(session.session_key)
        assert await session.aget("a") == 1
    with count_round_trips() as unchanged:
        await session.asave()
    await session.aset("a", 2)
    with count_round_trips() as changed:
        await session.asave()
    assert (create.count, load.count, unchanged.count, changed.count) == (1, 1, 0, 1)


def test_login_save_is_one_round_trip():
    """A save that also moves the session into a user's index is still 1 round trip."""
    login(saved(), "1")  # loads the scripts once, as any earlier request would have
    session = saved(a=1)
    session[SESSION_KEY] = "42"
    with count_round_trips() as login_save:
        session.save()
    assert login_save.count == 1


# -- expiry -------------------------------------------------------------------
def test_load_slides_idle_expiry_without_rewriting_data(r, settings):
    """A load past the touch interval extends the TTL and leaves the fields untouched."""
    settings.ELASTIC_SESSIONS = {**settings.ELASTIC_SESSIONS, "TOUCH_INTERVAL": 60}
    key = saved(a=1).session_key
    rkey = redis_key_of(key)
    before = r.hgetall(rkey)
    r.pexpire(rkey, 1000 * (settings.SESSION_COOKIE_AGE - 3600))
    session = SessionStore(key)
    assert session["a"] == 1
    assert r.ttl(rkey) > settings.SESSION_COOKIE_AGE - 5
    assert r.hgetall(rkey) == before
    assert session.touched_expiry_age is not None


def test_touch_is_throttled(r, settings):
    """A load within the touch interval leaves the TTL alone (no write at all)."""
    settings.ELASTIC_SESSIONS = {**settings.ELASTIC_SESSIONS, "TOUCH_INTERVAL": 60}
    key = saved(a=1).session_key
    rkey = redis_key_of(key)
    r.pexpire(rkey, 1000 * (settings.SESSION_COOKIE_AGE - 30))
    session = SessionStore(key)
    assert session["a"] == 1
    assert r.ttl(rkey) <= settings.SESSION_COOKIE_AGE - 29
    assert session.touched_expiry_age is None


def test_idle_session_expires_in_redis(settings, r):
    """A session idle for longer than its age is gone from Redis itself."""
    settings.SESSION_COOKIE_AGE = 1
    key = saved(a=1).session_key
    time.sleep(1.3)
    assert r.exists(redis_key_of(key)) == 0
    assert SessionStore(key).get("a") is None


def test_absolute_timeout_caps_sliding(settings, r):
    """However often it is touched, a session ends at its absolute deadline."""
    settings.ELASTIC_SESSIONS = {
        **settings.ELASTIC_SESSIONS,
        "ABSOLUTE_TIMEOUT": 2,
        "TOUCH_INTERVAL": 0,
    }
    key = saved(a=1).session_key
    seen = []
    for _ in range(6):
        session = SessionStore(key)
        seen.append(session.get("a"))
        if seen[-1] is not None:
            assert session.get_expiry_age() <= 2
        time.sleep(0.5)
    assert seen[0] == 1
    assert seen[-1] is None
    assert r.exists(redis_key_of(key)) == 0


def test_fixed_expiry_is_not_slid_by_loads(r):
    """A datetime expiry never slides, however often the session is read."""
    from datetime import timedelta

    from django.utils import timezone

    session = SessionStore()
    session.set_expiry(timezone.now() + timedelta(seconds=100))
    session["a"] = 1
    session.save()
    rkey = redis_key_of(session.session_key)
    r.expire(rkey, 50)
    assert SessionStore(session.session_key)["a"] == 1
    assert r.ttl(rkey) <= 50


# -- what is stored ---------------------------------------------------------------
def test_redis_never_sees_the_session_key(r):
    """Neither key names nor values in Redis contain the cookie's session key."""
    session = saved(a=1)
    session[SESSION_KEY] = "7"
    session.save()
    dump = b"".join(
        k + b"".join(a + b for a, b in r.hgetall(k).items()) if r.type(k) == b"hash" else k
        for k in r.keys("*")
    )
    assert session.session_key.encode() not in dump
    assert storage_id(session.session_key).encode() in dump


def test_logged_in_session_stays_in_compact_encoding(r):
    """A typical logged-in session (64-character auth hash) stays a listpack hash."""
    session = saved(
        **{
            SESSION_KEY: "42",
            "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
            "_auth_user_hash": "f" * 64,
            "cart": {"3": 1, "7": 2},
        }
    )
    assert r.object("encoding", redis_key_of(session.session_key)) == b"listpack"


# -- the per-user index -------------------------------------------------------------
def login(session, user_id="42"):
    session[SESSION_KEY] = user_id
    session.save()


def index_members(r, user_id="42"):
    return set(r.zrange(user_index_redis_key(user_id), 0, -1))


def test_index_follows_login_cycle_and_logout(r):
    """The user's index holds exactly the live session ids through login, cycle and logout."""
    session = saved(a=1)
    login(session)
    assert index_members(r) == {storage_id(session.session_key).encode()}
    session.cycle_key()
    assert index_members(r) == {storage_id(session.session_key).encode()}
    session.flush()
    assert index_members(r) == set()
    assert r.exists(user_index_redis_key("42")) == 0


def test_index_expires_with_its_sessions(r, settings):
    """The index key carries a TTL no later than its last session's deadline."""
    session = saved(a=1)
    login(session)
    ttl = r.ttl(user_index_redis_key("42"))
    assert 0 < ttl <= settings.ELASTIC_SESSIONS.get("ABSOLUTE_TIMEOUT", 30 * 86400) + 120


def test_user_switch_moves_session_between_indexes(r):
    """Changing the user id in a session moves it from one index to the other."""
    session = saved()
    login(session, "1")
    login(session, "2")
    sid = storage_id(session.session_key).encode()
    assert index_members(r, "1") == set()
    assert index_members(r, "2") == {sid}


async def test_async_index_follows_login_and_logout(r):
    """The async paths keep the index like the sync ones."""
    session = SessionStore()
    await session.aset(SESSION_KEY, "42")
    await session.asave()
    assert index_members(r) == {storage_id(session.session_key).encode()}
    await session.acycle_key()
    assert index_members(r) == {storage_id(session.session_key).encode()}
    await session.aflush()
    assert index_members(r) == set()


def test_login_and_logout_rebuild_an_index_key_of_the_wrong_type(r):
    """Garbage under a user's index name does not fail a login or a logout."""
    r.set(user_index_redis_key("42"), b"garbage")
    session = saved(a=1)
    login(session)
    assert index_members(r) == {storage_id(session.session_key).encode()}
    r.delete(user_index_redis_key("42"))
    r.set(user_index_redis_key("42"), b"garbage again")
    key = session.session_key
    session.flush()
    assert r.exists(user_index_redis_key("42")) == 0
    assert r.exists(redis_key_of(key)) == 0


def test_logout_of_a_loaded_session_is_one_round_trip(r):
    """flush() of a loaded, signed-in session deletes it and its index entry at once."""
    login(saved(), "1")  # scripts loaded, connections open
    key = saved(a=1).session_key
    login(SessionStore(key), "42")
    session = SessionStore(key)
    assert session[SESSION_KEY] == "42"
    with count_round_trips() as logout:
        session.flush()
    assert logout.count == 1
    assert r.exists(redis_key_of(key)) == 0
    assert r.exists(user_index_redis_key("42")) == 0


def test_delete_fixes_the_index_of_the_owner_the_store_names(r):
    """If another request switched the user meanwhile, the real owner's index is fixed."""
    key = saved(a=1).session_key
    login(SessionStore(key), "1")
    stale = SessionStore(key)
    assert stale[SESSION_KEY] == "1"
    login(SessionStore(key), "2")  # elsewhere: the session now belongs to user 2
    stale.flush()
    assert r.exists(redis_key_of(key)) == 0
    assert index_members(r, "1") == set()
    assert index_members(r, "2") == set()


async def test_async_logout_of_a_loaded_session_is_one_round_trip(r):
    """The async flush does the same in one round trip."""
    login(saved(), "1")
    key = saved(a=1).session_key
    login(SessionStore(key), "42")
    session = SessionStore(key)
    assert await session.aget(SESSION_KEY) == "42"
    await SessionStore().aexists("x" * 32)  # open the async connection
    with count_round_trips() as logout:
        await session.aflush()
    assert logout.count == 1
    assert r.exists(user_index_redis_key("42")) == 0


def test_huge_timeouts_are_capped_not_wrapped(r, settings):
    """Idle timeouts and deadlines past 2106 are stored as the largest value, not wrapped."""
    settings.ELASTIC_SESSIONS = {**settings.ELASTIC_SESSIONS, "ABSOLUTE_TIMEOUT": 10**10}
    session = SessionStore()
    session.set_expiry(10**10)
    session["a"] = 1
    session.save()
    meta = r.hget(redis_key_of(session.session_key), b"\x00")
    _, deadline, idle = struct.unpack(">III", meta)
    assert deadline == idle == 2**32 - 1
    assert r.ttl(redis_key_of(session.session_key)) > 10**9
    assert SessionStore(session.session_key)["a"] == 1


def test_import_session_creates_under_the_given_key_once(r):
    """import_session creates the key with the data and a fixed end, never twice."""
    key = "k" * 32
    ends = int(time.time()) + 300
    assert SessionStore.import_session(key, {"a": 1}, ends)
    assert 290 <= r.ttl(redis_key_of(key)) <= 300
    assert SessionStore(key)["a"] == 1
    assert not SessionStore.import_session(key, {"a": 2}, ends)
    assert SessionStore(key)["a"] == 1
    with pytest.raises(ValueError, match="session key"):
        SessionStore.import_session("short", {"a": 1}, ends)
