"""clearsessions_elastic prunes index entries of ended sessions, and only those."""

from __future__ import annotations

import logging
from io import StringIO

import pytest
from django.contrib.auth import SESSION_KEY
from django.core.management import CommandError, call_command

from elastic_sessions.backends.redis import SessionStore
from elastic_sessions.keys import storage_id, user_index_redis_key

from .contract import redis_key_of


def signed_in(user_id):
    session = SessionStore()
    session[SESSION_KEY] = user_id
    session.save()
    return session


def test_prunes_stale_entries_and_keeps_live_ones(elastic_redis):
    """Entries whose session vanished are removed; dry-run only counts them."""
    r = elastic_redis.client()
    live, gone = signed_in("1"), signed_in("1")
    only_gone = signed_in("2")
    r.delete(redis_key_of(gone.session_key), redis_key_of(only_gone.session_key))
    out = StringIO()
    call_command("clearsessions_elastic", "--dry-run", stdout=out)
    assert "stale entries would remove: 2" in out.getvalue()
    assert r.zcard(user_index_redis_key("1")) == 2
    out = StringIO()
    call_command("clearsessions_elastic", stdout=out)
    assert "user indexes scanned: 2; stale entries removed: 2" in out.getvalue()
    assert r.zrange(user_index_redis_key("1"), 0, -1) == [storage_id(live.session_key).encode()]
    assert r.exists(user_index_redis_key("2")) == 0


def test_broken_indexes_are_reported_and_removed(elastic_redis, caplog):
    """An index key of the wrong type is reported (dry-run) and deleted, next to sane ones."""
    r = elastic_redis.client()
    live = signed_in("1")
    broken = user_index_redis_key("2")
    r.set(broken, "garbage")
    out = StringIO()
    with caplog.at_level(logging.WARNING, logger="elastic_sessions"):
        call_command("clearsessions_elastic", "--dry-run", stdout=out)
    assert "broken indexes would remove: 1" in out.getvalue()
    assert any(broken in record.getMessage() for record in caplog.records)
    assert r.type(broken) == b"string"
    out = StringIO()
    call_command("clearsessions_elastic", stdout=out)
    assert out.getvalue().strip() == (
        "user indexes scanned: 1; stale entries removed: 0; broken indexes removed: 1"
    )
    assert r.exists(broken) == 0
    assert r.zrange(user_index_redis_key("1"), 0, -1) == [storage_id(live.session_key).encode()]


def test_redis_down_is_a_command_error(redis_factory, use_server):
    """With Redis unreachable the command fails with a CommandError cron can see."""
    server = redis_factory()
    use_server(server)
    server.kill()
    with pytest.raises(CommandError, match="run again later"):
        call_command("clearsessions_elastic")
