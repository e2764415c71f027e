"""elastic_sessions.api lists and ends a user's sessions, and only that user's."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth import SESSION_KEY

from elastic_sessions import api
from elastic_sessions.backends.redis import SessionStore
from elastic_sessions.keys import storage_id, user_index_redis_key

from .contract import redis_key_of


def signed_in(user_id="42", **data):
    session = SessionStore()
    session.update({SESSION_KEY: user_id, **data})
    session.save()
    return session


def test_list_sessions_marks_current_first():
    """A user's sessions are listed, the current one first and marked."""
    first, second = signed_in(), signed_in()
    signed_in("7")
    infos = api.list_sessions("42", current_session_key=second.session_key)
    assert infos[0].storage_id == storage_id(second.session_key)
    assert {info.storage_id for info in infos} == {
        storage_id(first.session_key),
        storage_id(second.session_key),
    }
    assert [info.is_current for info in infos] == [True, False]
    assert all(info.created is not None and info.expires > info.created for info in infos)


def test_listing_prunes_sessions_gone_from_redis(elastic_redis):
    """A session that expired or was evicted disappears from the listing and the index."""
    gone, kept = signed_in(), signed_in()
    elastic_redis.client().delete(redis_key_of(gone.session_key))
    assert [info.storage_id for info in api.list_sessions("42")] == [storage_id(kept.session_key)]
    members = elastic_redis.client().zrange(user_index_redis_key("42"), 0, -1)
    assert members == [storage_id(kept.session_key).encode()]


def test_revoke_session_of_the_user():
    """revoke_session ends that session and reports True."""
    session = signed_in()
    assert api.revoke_session("42", storage_id(session.session_key))
    assert not SessionStore().exists(session.session_key)
    assert api.list_sessions("42") == []


def test_revoke_session_of_another_user_is_refused():
    """A storage id of somebody else's session is refused and the session survives."""
    victim = signed_in("1")
    assert not api.revoke_session("2", storage_id(victim.session_key))
    assert SessionStore().exists(victim.session_key)
    assert len(api.list_sessions("1")) == 1


@pytest.mark.parametrize("bad", ["", "x", "a" * 22 + "{", "*", "../" * 8])
def test_revoke_with_malformed_id_is_refused(bad):
    """A malformed storage id is refused without touching Redis."""
    assert not api.revoke_session("42", bad)


def test_revoked_session_logs_the_browser_out():
    """After revoke, the browser's next request finds no session (UpdateError on save)."""
    session = signed_in(cart=[1])
    api.revoke_session("42", storage_id(session.session_key))
    again = SessionStore(session.session_key)
    assert again.get(SESSION_KEY) is None
    assert again.session_key is None


def test_revoke_user_sessions_everywhere_and_everywhere_else():
    """revoke_user_sessions ends all of a user's sessions, or all but the kept one."""
    keep, other, third = signed_in(), signed_in(), signed_in()
    bystander = signed_in("7")
    assert api.revoke_user_sessions("42", keep_session_key=keep.session_key) == 2
    assert [info.storage_id for info in api.list_sessions("42")] == [storage_id(keep.session_key)]
    assert not SessionStore().exists(other.session_key)
    assert not SessionStore().exists(third.session_key)
    assert api.revoke_user_sessions("42") == 1
    assert api.list_sessions("42") == []
    assert SessionStore().exists(bystander.session_key)


def test_accepts_user_instances(django_user_model, db):
    """The API takes a user instance as well as a primary key."""
    user = django_user_model.objects.create(username="u")
    signed_in(str(user.pk))
    assert len(api.list_sessions(user)) == 1
    assert api.revoke_user_sessions(user) == 1


async def test_async_twins():
    """The async API lists and revokes like the sync one."""
    first, second = signed_in(), signed_in()
    infos = await api.alist_sessions("42", current_session_key=first.session_key)
    assert len(infos) == 2
    assert await api.arevoke_session("42", storage_id(second.session_key))
    assert not await api.arevoke_session("99", storage_id(first.session_key))
    assert await api.arevoke_user_sessions("42") == 1
    assert await api.alist_sessions("42") == []


def test_revoke_signal(settings):
    """Revoking sends session_revoked with the user id and the storage ids."""
    from elastic_sessions.signals import session_revoked

    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    session_revoked.connect(receiver)
    try:
        session = signed_in()
        api.revoke_user_sessions("42")
    finally:
        session_revoked.disconnect(receiver)
    assert received == [{"signal": session_revoked, "user_id": "42",
                         "storage_ids": [storage_id(session.session_key)]}]  # fmt: skip


@pytest.fixture
def broken_index(elastic_redis):
    """User 42 has a live session, but their index key holds a string (corrupted data)."""
    session = signed_in()
    key = user_index_redis_key("42")
    elastic_redis.client().set(key, "not a sorted set")
    return session, key


def warnings_about(key, caplog):
    return [rec for rec in caplog.records
            if rec.levelno == logging.WARNING and key in rec.getMessage()]  # fmt: skip


def test_listing_with_a_broken_index_is_empty_and_logged(broken_index, elastic_redis, caplog):
    """An index key of the wrong type lists as no sessions, with a warning naming the key."""
    _, key = broken_index
    with caplog.at_level(logging.WARNING, logger="elastic_sessions"):
        assert api.list_sessions("42") == []
    assert warnings_about(key, caplog)
    assert elastic_redis.client().type(key) == b"string"


async def test_async_listing_with_a_broken_index_is_empty_and_logged(broken_index, caplog):
    """The async listing treats a broken index the same way."""
    _, key = broken_index
    with caplog.at_level(logging.WARNING, logger="elastic_sessions"):
        assert await api.alist_sessions("42") == []
    assert warnings_about(key, caplog)


def test_revoke_user_sessions_drops_a_broken_index(broken_index, elastic_redis, caplog):
    """Log-out-everywhere deletes a broken index with a warning, so the next login indexes again."""
    _, key = broken_index
    with caplog.at_level(logging.WARNING, logger="elastic_sessions"):
        assert api.revoke_user_sessions("42") == 0
    assert warnings_about(key, caplog)
    assert elastic_redis.client().exists(key) == 0
    fresh = signed_in()
    assert [info.storage_id for info in api.list_sessions("42")] == [storage_id(fresh.session_key)]


async def test_arevoke_user_sessions_drops_a_broken_index(broken_index, elastic_redis, caplog):
    """The async log-out-everywhere deletes a broken index too."""
    _, key = broken_index
    with caplog.at_level(logging.WARNING, logger="elastic_sessions"):
        assert await api.arevoke_user_sessions("42") == 0
    assert warnings_about(key, caplog)
    assert elastic_redis.client().exists(key) == 0


def test_revoke_session_with_a_broken_index(broken_index, elastic_redis):
    """Revoking one session still ends it when the index is broken, and drops the index."""
    session, key = broken_index
    assert api.revoke_session("42", storage_id(session.session_key))
    assert not SessionStore().exists(session.session_key)
    assert elastic_redis.client().exists(key) == 0


async def test_arevoke_session_with_a_broken_index(broken_index, elastic_redis):
    """The async twin ends the session and drops the broken index as well."""
    session, key = broken_index
    assert await api.arevoke_session("42", storage_id(session.session_key))
    assert not await SessionStore().aexists(session.session_key)
    assert elastic_redis.client().exists(key) == 0
