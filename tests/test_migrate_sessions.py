"""migrate_sessions_elastic: users signed in under Django's ``db`` engine stay signed in,
with the same data, after the switch to each elastic engine; re-runs, dry runs,
batches and checkpoints, rows that cannot move, outages."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.cache import SessionStore as CacheStore
from django.contrib.sessions.backends.db import SessionStore as DatabaseStore
from django.contrib.sessions.models import Session
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from elastic_sessions.api import list_sessions
from elastic_sessions.keys import storage_id

from .contract import redis_key_of

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.database]

DB_ENGINE = "django.contrib.sessions.backends.db"
ENGINES = ["elastic_sessions.backends.redis", "elastic_sessions.backends.hybrid"]


def run(*args):
    out = StringIO()
    call_command("migrate_sessions_elastic", *args, stdout=out)
    return out.getvalue()


def sign_in_on_db(settings, username="ada", **data):
    """A browser signed in under Django's own engine, with ``data`` in its session."""
    settings.SESSION_ENGINE = DB_ENGINE
    client = Client()
    assert client.get(f"/login/{username}/").content == b"in"
    for key, value in data.items():
        assert client.get(f"/set/{key}/{value}/").status_code == 200
    return client


def after_switch(settings, client, engine):
    """The same browser (cookie jar) talking to a site now on ``engine``."""
    settings.SESSION_ENGINE = engine
    # A Client builds its middleware (and so picks the engine) on its first request.
    switched = Client()
    switched.cookies = client.cookies
    return switched


def seen(client, keys="cart,theme"):
    return client.get(f"/keys/{keys}/").json()


def user_id(username="ada"):
    return str(get_user_model().objects.get(username=username).pk)


def database_session(**data):
    """A session saved by Django's ``db`` engine, straight to the table."""
    store = DatabaseStore()
    store.update(data)
    store.save()
    return store


@pytest.mark.parametrize("engine", ENGINES)
def test_signed_in_user_stays_signed_in_with_the_same_data(settings, engine):
    """After the switch and one run, the old cookie loads the same user and data."""
    browser = sign_in_on_db(settings, cart="3-apples", theme="dark")
    cookie = browser.cookies[settings.SESSION_COOKIE_NAME].value
    before = dict(DatabaseStore(cookie).load())

    settings.SESSION_ENGINE = engine
    out = run()
    switched = after_switch(settings, browser, engine)

    assert "copied: 1;" in out
    assert "verified: 1;" in out
    assert "removed from the source: 1;" in out
    assert seen(switched) == {"values": {"cart": "3-apples", "theme": "dark"}, "user": user_id()}
    assert switched.cookies[settings.SESSION_COOKIE_NAME].value == cookie
    store = switched.session
    assert store.session_key == cookie
    assert {key: store[key] for key in store.keys()} == before  # noqa: SIM118
    assert not Session.objects.filter(session_key=cookie).exists()
    # The user's index lists it, so "sign out everywhere" reaches moved sessions too.
    ada = get_user_model().objects.get(username="ada")
    assert [info.storage_id for info in list_sessions(ada)] == [storage_id(cookie)]


@pytest.mark.parametrize("engine", ENGINES)
def test_the_runbook_copy_ahead_then_move_signs_nobody_out(settings, engine):
    """Copy with --keep-source while the old site serves, switch, move the rest."""
    ada = sign_in_on_db(settings, "ada", cart="3-apples")
    settings.SESSION_ENGINE = engine
    assert "copied: 1;" in run("--keep-source")
    # Still served by the old engine (its middleware was built with it): a new login.
    settings.SESSION_ENGINE = DB_ENGINE
    bob = sign_in_on_db(settings, "bob", cart="1-pear")

    ada, bob = after_switch(settings, ada, engine), after_switch(settings, bob, engine)
    out = run()

    assert "copied: 1; already present: 1;" in out
    assert "removed from the source: 2;" in out
    assert seen(ada) == {"values": {"cart": "3-apples", "theme": None}, "user": user_id("ada")}
    assert seen(bob) == {"values": {"cart": "1-pear", "theme": None}, "user": user_id("bob")}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_request_before_the_copy_drops_the_cookie(settings, engine):
    """Why the runbook copies first: an unknown key loads empty and the cookie is deleted."""
    browser = sign_in_on_db(settings, cart="3-apples")
    switched = after_switch(settings, browser, engine)

    assert seen(switched)["user"] is None
    run()

    assert switched.cookies[settings.SESSION_COOKIE_NAME].value == ""
    assert seen(switched)["user"] is None


@pytest.mark.parametrize("engine", ENGINES)
def test_second_run_never_overwrites_a_session_changed_on_the_new_engine(settings, engine):
    """With --keep-source a re-run finds the session present and leaves the user's change."""
    browser = sign_in_on_db(settings, cart="3-apples")
    settings.SESSION_ENGINE = engine
    assert "copied: 1;" in run("--keep-source")
    switched = after_switch(settings, browser, engine)
    assert switched.get("/set/cart/5-pears/").status_code == 200

    out = run("--keep-source")

    assert "copied: 0; already present: 1;" in out
    assert seen(switched)["values"]["cart"] == "5-pears"
    assert Session.objects.count() == 1  # --keep-source removes nothing


@pytest.mark.parametrize("engine", ENGINES)
def test_a_logout_on_the_new_engine_is_not_undone_by_a_second_run(settings, engine):
    """The first run removed the source row, so a later run cannot bring the session back."""
    browser = sign_in_on_db(settings, cart="3-apples")
    old_cookie = browser.cookies[settings.SESSION_COOKIE_NAME].value
    settings.SESSION_ENGINE = engine
    run()
    switched = after_switch(settings, browser, engine)
    assert switched.get("/logout/").content == b"out"

    out = run()

    assert "examined: 0; copied: 0;" in out
    thief = Client()
    thief.cookies[settings.SESSION_COOKIE_NAME] = old_cookie
    assert seen(thief)["user"] is None


@pytest.mark.parametrize("engine", ENGINES)
def test_dry_run_counts_and_changes_nothing(settings, engine):
    """--dry-run reports what would be copied; the target stays empty, the rows stay."""
    browser = sign_in_on_db(settings, cart="3-apples")
    database_session(theme="light")
    settings.SESSION_ENGINE = engine

    out = run("--dry-run")

    assert "examined: 2; would copy: 2; already present: 0;" in out
    assert seen(after_switch(settings, browser, engine))["user"] is None
    assert Session.objects.count() == 2
    assert "would copy: 2;" in run("--dry-run")  # nothing was changed by the first


def test_dry_run_counts_sessions_already_present(settings):
    """A dry run after a --keep-source copy counts every live session as present."""
    settings.SESSION_ENGINE = DB_ENGINE
    database_session(theme="light")
    settings.SESSION_ENGINE = ENGINES[0]
    run("--keep-source")

    assert "would copy: 0; already present: 1;" in run("--dry-run")


def test_small_batches_report_checkpoints_and_resume_after_one(settings):
    """--batch-size bounds each query; --after CHECKPOINT skips what is done."""
    settings.SESSION_ENGINE = DB_ENGINE
    keys = sorted(database_session(n=n).session_key for n in range(5))
    settings.SESSION_ENGINE = ENGINES[0]

    out = run("--batch-size", "2", "--keep-source", "--verbosity", "2")

    checkpoints = [line.rsplit(" ", 1)[1] for line in out.splitlines() if "checkpoint " in line]
    assert checkpoints[:3] == [keys[1][:8], keys[3][:8], keys[4][:8]]
    assert "copied: 5;" in out
    # A checkpoint is a short prefix, never a whole key (a cookie) in a log.
    assert not any(key in out for key in keys)

    # Resuming re-reads only from the checkpoint on (the key it prefixes, and later ones).
    out = run("--keep-source", "--after", checkpoints[1])

    assert "examined: 2; copied: 0; already present: 2;" in out


def test_moved_session_ends_when_the_source_row_would_have(settings, elastic_redis):
    """The copy expires at the row's expire_date (a fixed expiry), never later or sooner."""
    settings.SESSION_ENGINE = DB_ENGINE
    store = database_session(theme="light")
    store.set_expiry(600)
    store.save()
    settings.SESSION_ENGINE = ENGINES[0]

    run()

    ttl = elastic_redis.client().ttl(redis_key_of(store.session_key))
    assert 590 <= ttl <= 600


def test_rows_that_cannot_move_are_counted_and_fail_the_run(settings, caplog):
    """Expired rows are skipped quietly; undecodable rows and foreign keys fail the run."""
    settings.SESSION_ENGINE = DB_ENGINE
    good = database_session(theme="light")
    ended = database_session(theme="old")
    Session.objects.filter(session_key=ended.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    later = timezone.now() + timedelta(days=1)
    Session.objects.create(session_key="z" * 32, session_data="not-signed", expire_date=later)
    encoded = DatabaseStore().encode({"theme": "x"})
    Session.objects.create(session_key="CustomKey-1234", session_data=encoded, expire_date=later)
    settings.SESSION_ENGINE = ENGINES[0]
    out = StringIO()

    with pytest.raises(CommandError, match="2 live session") as failed:
        call_command("migrate_sessions_elastic", stdout=out)

    assert failed.value.returncode == 1
    assert (
        "examined: 4; copied: 1; already present: 0; expired (skipped): 1; "
        "undecodable (skipped): 1; incompatible keys (skipped): 1; verified: 1;"
    ) in out.getvalue()
    assert Session.objects.count() == 3  # only the moved row left the table
    assert not Session.objects.filter(session_key=good.session_key).exists()
    assert "could not be decoded" in caplog.text
    assert "z" * 32 not in caplog.text


def test_refuses_a_target_that_is_not_an_elastic_engine(settings):
    """Run with SESSION_ENGINE still on Django's db engine, it explains what to do."""
    settings.SESSION_ENGINE = DB_ENGINE
    with pytest.raises(CommandError, match="settings of the new release"):
        run()


def test_batch_size_must_be_positive(settings):
    """--batch-size 0 is refused before anything is read."""
    with pytest.raises(CommandError, match="at least 1"):
        run("--batch-size", "0")


def test_redis_down_fails_loudly_and_keeps_the_source(settings, redis_factory, use_server):
    """An outage stops the run with a non-zero status; no row is lost, a re-run finishes."""
    settings.SESSION_ENGINE = DB_ENGINE
    database_session(theme="light")
    server = redis_factory()
    use_server(server)
    server.kill()
    settings.SESSION_ENGINE = ENGINES[0]

    with pytest.raises(CommandError, match="run again later") as failed:
        run()

    assert failed.value.returncode == 1
    assert Session.objects.count() == 1
    server.start()
    assert "copied: 1;" in run()
    assert Session.objects.count() == 0


# -- --source cache: Django's cache engine on django-redis ---------------------------
CACHE_ENGINE = "django.contrib.sessions.backends.cache"


@pytest.fixture
def session_cache(settings, elastic_redis):
    """Django's cache engine on a django-redis alias of the same Redis server."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "sessions": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": elastic_redis.url},
    }
    settings.SESSION_CACHE_ALIAS = "sessions"
    return caches["sessions"]


@pytest.mark.parametrize("engine", ENGINES)
def test_cache_engine_user_stays_signed_in_and_a_second_run_copies_nothing(
    settings, session_cache, engine
):
    """--source cache finds sessions with SCAN, moves them, and removes them from the cache."""
    settings.SESSION_ENGINE = CACHE_ENGINE
    client = Client()
    assert client.get("/login/ada/").content == b"in"
    assert client.get("/set/cart/3-apples/").status_code == 200
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value

    settings.SESSION_ENGINE = engine
    out = run("--source", "cache", "--verbosity", "2")
    switched = after_switch(settings, client, engine)

    assert "copied: 1;" in out
    assert "verified: 1;" in out
    assert "checkpoint" not in out  # SCAN has no order to resume from
    assert seen(switched) == {"values": {"cart": "3-apples", "theme": None}, "user": user_id()}
    assert session_cache.get(f"django.contrib.sessions.cache{cookie}") is None
    assert not Session.objects.exists()  # the cache engine never used the table
    assert "examined: 0; copied: 0;" in run("--source", "cache")


def test_cache_source_keeps_the_remaining_lifetime(settings, session_cache, elastic_redis):
    """A cached session with ten minutes left ends ten minutes later on the new engine."""
    settings.SESSION_ENGINE = CACHE_ENGINE
    store = CacheStore()
    store["theme"] = "light"
    store.set_expiry(600)
    store.save()
    settings.SESSION_ENGINE = ENGINES[0]

    assert "copied: 1;" in run("--source", "cache")

    ttl = elastic_redis.client().ttl(redis_key_of(store.session_key))
    assert 590 <= ttl <= 600


def test_cache_source_needs_django_redis(settings):
    """A cache alias that cannot SCAN (locmem) is refused with what to pass instead."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with pytest.raises(CommandError, match="not a django-redis cache"):
        run("--source", "cache", "--cache-alias", "default")


def test_after_is_refused_with_the_cache_source(settings):
    """--after names a database checkpoint; SCAN has none."""
    with pytest.raises(CommandError, match="--source db only"):
        run("--source", "cache", "--after", "abc")
