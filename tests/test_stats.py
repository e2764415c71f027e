"""session_stats() and sessions_elastic_stats count a known set of sessions exactly."""

from __future__ import annotations

import json
import time
from io import StringIO

import pytest
from django.contrib.auth import SESSION_KEY
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from elastic_sessions import api
from elastic_sessions.backends import hybrid, redis
from elastic_sessions.breaker import breaker_for
from elastic_sessions.keys import storage_id, user_hash
from elastic_sessions.models import DurableSession, RedisInvalidation
from elastic_sessions.stats import MemoryEstimate, RedisFigures
from elastic_sessions.storage.hybrid import BREAKER_NAME

from .contract import redis_key_of

# The documented --json shape: renaming or dropping one breaks monitoring scripts.
TOP_KEYS = {
    "engine",
    "generated_at",
    "soon_seconds",
    "redis",
    "redis_error",
    "database",
    "breaker",
    "top_users_by",
    "top_users",
}
REDIS_KEYS = {
    "sessions",
    "expiring_soon",
    "without_ttl",
    "without_metadata",
    "user_indexes",
    "indexed_sessions",
    "other_keys",
    "memory",
    "evicted_keys",
}
MEMORY_KEYS = {"sampled", "bytes_per_session", "estimated_total_bytes"}
DATABASE_KEYS = {
    "rows",
    "live",
    "expired",
    "signed_in",
    "expiring_soon",
    "pending_invalidations",
    "oldest_invalidation_age",
}


def make(store, user_id=None, expiry=None):
    session = store()
    if user_id is not None:
        session[SESSION_KEY] = user_id
    if expiry is not None:
        session.set_expiry(expiry)
    session.save()
    return session


def five_sessions(store):
    """User "1": three sessions, user "2": one, and one anonymous session ending in a minute."""
    sessions = [make(store, "1"), make(store, "1"), make(store, "1"), make(store, "2")]
    return [*sessions, make(store, expiry=60)]


def redis_figures(**options) -> RedisFigures:
    figures = api.session_stats(**options).redis
    assert figures is not None
    return figures


def sampled_memory(sample: int) -> MemoryEstimate:
    memory = redis_figures(sample=sample).memory
    assert memory is not None
    return memory


def run(*args):
    out = StringIO()
    call_command("sessions_elastic_stats", *args, stdout=out)
    return out.getvalue()


def test_counts_sessions_users_and_expiring_soon():
    """Five sessions, two signed-in users and one short TTL are counted exactly."""
    five_sessions(redis.SessionStore)
    stats = api.session_stats(soon=3600)
    assert stats.engine == "redis"
    figures = stats.redis
    assert figures is not None
    assert (figures.sessions, figures.expiring_soon, figures.without_ttl) == (5, 1, 0)
    assert (figures.user_indexes, figures.indexed_sessions) == (2, 4)
    assert (figures.without_metadata, figures.other_keys) == (0, 0)
    assert stats.top_users_by == "user_hash"
    assert [(u.user, u.sessions) for u in stats.top_users] == [
        (user_hash("1"), 3),
        (user_hash("2"), 1),
    ]
    assert stats.database is None and stats.breaker is None


def test_soon_threshold_decides_what_is_expiring():
    """--soon below the short session's TTL counts none; at 0 nothing is ever soon."""
    five_sessions(redis.SessionStore)
    assert redis_figures(soon=30).expiring_soon == 0
    assert redis_figures(soon=0).expiring_soon == 0
    assert redis_figures(soon=61).expiring_soon == 1


def test_top_n_keeps_the_users_with_most_sessions():
    """--top 1 lists only the heaviest user; --top 0 lists nobody."""
    five_sessions(redis.SessionStore)
    assert [(u.user, u.sessions) for u in api.session_stats(top=1).top_users] == [
        (user_hash("1"), 3)
    ]
    assert api.session_stats(top=0).top_users == []


def test_fences_stray_keys_and_keys_without_ttl_are_told_apart(elastic_redis):
    """A metadata-less hash, a wrong-type key and a TTL-less session each land in their figure."""
    sessions = five_sessions(redis.SessionStore)
    client = elastic_redis.client()
    make(redis.SessionStore)
    client.hset("es:{not a storage id}", "a", "b")
    client.hset(f"es:{{{'A' * 22}}}", b"\x04", b"3")  # what a hybrid fence looks like
    client.set(f"es:{{{'B' * 22}}}", "not a hash")
    client.set(f"es:u:{{{'C' * 22}}}", "not a sorted set")
    client.persist(redis_key_of(sessions[0].session_key))
    client.set("unrelated", "outside the prefix")
    figures = redis_figures()
    assert figures.sessions == 6
    assert figures.without_ttl == 1
    assert figures.without_metadata == 1
    assert figures.other_keys == 3
    assert figures.user_indexes == 2


def test_small_batches_give_the_same_figures():
    """--batch-size 1 pages the SCAN one key per round trip and counts the same."""
    five_sessions(redis.SessionStore)
    paged, whole = api.session_stats(batch_size=1), api.session_stats(batch_size=1000)
    assert paged.redis == whole.redis
    assert paged.top_users == whole.top_users
    assert redis_figures(batch_size=1).sessions == 5


def test_sample_measures_memory_per_session(elastic_redis):
    """--sample N measures N sessions; the mean lies within the real sizes, scaled to all."""
    sessions = five_sessions(redis.SessionStore)
    client = elastic_redis.client()
    real = [client.memory_usage(redis_key_of(s.session_key)) for s in sessions]
    memory = sampled_memory(2)
    assert memory.sampled == 2
    assert min(real) <= memory.bytes_per_session <= max(real)
    assert memory.estimated_total_bytes == memory.bytes_per_session * 5
    assert sampled_memory(50).sampled == 5
    assert redis_figures(sample=0).memory is None


def test_json_output_has_the_documented_keys():
    """--json prints one object with the documented, stable keys and the exact counts."""
    five_sessions(redis.SessionStore)
    before = int(time.time())
    data = json.loads(run("--json", "--sample", "3", "--top", "2"))
    assert set(data) == TOP_KEYS
    assert set(data["redis"]) == REDIS_KEYS
    assert set(data["redis"]["memory"]) == MEMORY_KEYS
    assert data["engine"] == "redis"
    assert data["generated_at"] >= before
    assert data["soon_seconds"] == 3600
    assert data["redis"]["sessions"] == 5
    assert data["redis"]["expiring_soon"] == 1
    assert data["redis"]["memory"]["sampled"] == 3
    assert data["redis"]["evicted_keys"] == 0
    assert data["top_users"] == [
        {"user": user_hash("1"), "sessions": 3},
        {"user": user_hash("2"), "sessions": 1},
    ]
    assert (data["database"], data["breaker"], data["redis_error"]) == (None, None, None)


def test_table_output_names_each_figure():
    """The default output is a readable table with the counts and the top users."""
    five_sessions(redis.SessionStore)
    out = run("--soon", "120")
    assert "Engine: redis" in out
    assert any(line.split() == ["Redis", "sessions", "5"] for line in out.splitlines())
    assert any(
        line.split()[-1] == "1" and "ending within 120 s" in line for line in out.splitlines()
    )
    assert f"  {user_hash('1')}  3" in out
    assert run("--verbosity", "0") == ""


def test_redis_down_is_a_command_error(redis_factory, use_server):
    """With Redis unreachable the redis engine's stats fail with a clear message, exit 1."""
    server = redis_factory()
    use_server(server, SOCKET_TIMEOUT=0.2, RETRIES=0)
    server.kill()
    with pytest.raises(CommandError, match="Redis could not collect session stats") as failure:
        run("--json")
    assert failure.value.returncode == 1


@pytest.mark.parametrize(
    "args", [["--top", "-1"], ["--soon", "-1"], ["--sample", "-1"], ["--batch-size", "0"]]
)
def test_bad_arguments_are_command_errors(args):
    """Negative counts and a batch size below 1 are refused before Redis is asked."""
    with pytest.raises(CommandError, match="must be"):
        run(*args)


def test_non_elastic_engine_is_improperly_configured(settings):
    """Stats of Django's own engines are refused with the setting named."""
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    with pytest.raises(ImproperlyConfigured, match="SESSION_ENGINE"):
        api.session_stats()


# -- the hybrid engine -------------------------------------------------------------


@pytest.fixture
def hybrid_engine(settings):
    settings.SESSION_ENGINE = "elastic_sessions.backends.hybrid"
    yield
    breaker_for(BREAKER_NAME).reset()


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
def test_hybrid_counts_rows_copies_and_queue(hybrid_engine):
    """The hybrid's live, expired and signed-in rows, its queue and its copies are exact."""
    five_sessions(hybrid.SessionStore)
    ended = make(hybrid.SessionStore, "2")
    DurableSession.objects.filter(pk=storage_id(ended.session_key)).update(
        expires_at=int(time.time()) - 10
    )
    RedisInvalidation.objects.create(storage_id="Q" * 22, queued_at=time.time_ns() - 5 * 10**9)
    stats = api.session_stats(soon=3600, top=5)
    assert stats.engine == "hybrid"
    database, copies, breaker = stats.database, stats.redis, stats.breaker
    assert database is not None and copies is not None and breaker is not None
    assert (database.rows, database.live, database.expired) == (6, 5, 1)
    assert (database.signed_in, database.expiring_soon) == (4, 1)
    assert database.pending_invalidations == 1
    assert database.oldest_invalidation_age is not None
    assert 4 <= database.oldest_invalidation_age < 60
    assert stats.top_users_by == "user_id"
    assert [(u.user, u.sessions) for u in stats.top_users] == [("1", 3), ("2", 1)]
    assert copies.sessions == 6  # the ended row's copy still lives in Redis
    assert copies.user_indexes == 0  # the hybrid keeps its index in the database
    assert (breaker.state, breaker.open_for_seconds) == ("closed", None)
    assert stats.redis_error is None


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
def test_hybrid_json_has_the_documented_database_keys(hybrid_engine):
    """The hybrid's --json adds the database and breaker objects with their stable keys."""
    five_sessions(hybrid.SessionStore)
    data = json.loads(run("--json"))
    assert set(data) == TOP_KEYS
    assert set(data["database"]) == DATABASE_KEYS
    assert data["breaker"] == {"state": "closed", "open_for_seconds": None}
    assert data["database"]["live"] == 5
    assert data["database"]["oldest_invalidation_age"] is None


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
def test_hybrid_with_redis_down_reports_the_database_and_the_open_breaker(
    hybrid_engine, redis_factory, use_server
):
    """Redis down: the hybrid still reports its rows, the open breaker and the queued writes."""
    server = redis_factory()
    use_server(server, SOCKET_TIMEOUT=0.2, RETRIES=0, BREAKER_PROBE_INTERVAL=60.0)
    five_sessions(hybrid.SessionStore)
    server.kill()
    # Written while Redis is down: served by the database and queued for invalidation.
    make(hybrid.SessionStore, "2")
    data = json.loads(run("--json"))
    assert data["redis"] is None
    assert "Redis could not collect session stats" in data["redis_error"]
    assert data["database"]["live"] == 6
    assert data["database"]["pending_invalidations"] == 1
    assert data["breaker"]["state"] == "open"
    assert data["breaker"]["open_for_seconds"] >= 0
    assert "Redis unreachable" in run()
