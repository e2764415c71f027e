"""clearsessions_elastic prunes index entries of ended sessions, and only those."""

from __future__ import annotations

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


def test_redis_down_is_a_command_error(redis_factory, use_server):
    """With Redis unreachable the command fails with a CommandError cron can see."""
    server = redis_factory()
    use_server(server)
    server.kill()
    with pytest.raises(CommandError, match="run again later"):
        call_command("clearsessions_elastic")
