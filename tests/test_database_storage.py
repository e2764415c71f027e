"""The hybrid engine's durable storage: delta writes, no resurrection, versions."""

from __future__ import annotations

import time

import pytest

from elastic_sessions.codec import SessionMeta
from elastic_sessions.keys import StorageId
from elastic_sessions.models import DurableSession, DurableSessionField, RedisInvalidation
from elastic_sessions.storage import database
from elastic_sessions.storage.database import DatabaseSessionStorage
from elastic_sessions.storage.redis import IndexChange, WritePlan

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.database]

SID = StorageId("A" * 22)
DAY = 86400


def plan(**overrides):
    values = {
        "create": False,
        "idle": DAY,
        "absolute": 30 * DAY,
        "fixed_expiry": 0,
        "sets": {},
        "deletes": [],
    }
    values.update(overrides)
    return WritePlan(**values)


@pytest.fixture(params=["returning", "orm"])
def store(request, monkeypatch):
    """Each test runs with UPDATE ... RETURNING and with the ORM fallback used by
    databases without it (forced here by hiding the vendor from the table)."""
    if request.param == "orm":
        monkeypatch.setattr(database, "_LEAST", {})
    return DatabaseSessionStorage()


def created(store, **sets):
    fields = {name.encode(): value for name, value in sets.items()}
    result = store.write(SID, plan(create=True, sets=fields), invalidate_redis=False)
    assert result.status == 1
    return result


def test_create_then_load_returns_fields_meta_and_version(store):
    """A created session loads with its fields, its times and version 1."""
    result = created(store, a=b"1", b=b'"x"')
    record = store.load(SID)
    assert record is not None
    assert record.fields == {b"a": b"1", b"b": b'"x"'}
    assert record.version == result.version == 1
    assert record.meta == result.meta
    now = int(time.time())
    assert now - 2 <= record.meta.created <= now
    assert record.meta.deadline == record.meta.created + 30 * DAY
    assert now + DAY - 2 <= record.expires_at <= now + DAY


def test_create_of_an_existing_key_is_refused(store):
    """A second create under the same storage id reports a collision (status 0)."""
    created(store, a=b"1")
    again = store.write(SID, plan(create=True, sets={b"a": b"2"}), invalidate_redis=False)
    assert again.status == 0
    record = store.load(SID)
    assert record is not None
    assert record.fields == {b"a": b"1"}


def test_update_writes_only_the_delta_and_bumps_the_version(store):
    """Changed fields are upserted, removed ones deleted, the others left alone."""
    created(store, a=b"1", b=b"2", c=b"3")
    result = store.write(
        SID,
        plan(sets={b"a": b"10", b"d": b"4"}, deletes=[b"b"]),
        invalidate_redis=False,
    )
    assert result.status == 1
    assert result.version == 2
    record = store.load(SID)
    assert record is not None
    assert record.fields == {b"a": b"10", b"c": b"3", b"d": b"4"}
    assert record.version == 2


def test_two_writers_changing_different_fields_both_keep_their_change(store):
    """Deltas from two instances that loaded the same version both survive."""
    created(store, a=b"0", b=b"0")
    store.write(SID, plan(sets={b"a": b"1"}), invalidate_redis=False)
    store.write(SID, plan(sets={b"b": b"2"}), invalidate_redis=False)
    record = store.load(SID)
    assert record is not None
    assert record.fields == {b"a": b"1", b"b": b"2"}
    assert record.version == 3


def test_update_of_a_deleted_session_is_refused_and_does_not_resurrect(store):
    """A save after a delete reports the session missing and writes nothing."""
    created(store, a=b"1")
    store.delete(SID, invalidate_redis=False)
    result = store.write(SID, plan(sets={b"a": b"2"}), invalidate_redis=False)
    assert result.status == -1
    assert store.load(SID) is None
    assert not DurableSession.objects.filter(pk=SID).exists()


def test_expired_sessions_neither_load_nor_update(store):
    """Past its expiry a session is gone for reads and writes alike."""
    created(store, a=b"1")
    DurableSession.objects.filter(pk=SID).update(expires_at=int(time.time()) - 1)
    assert store.load(SID) is None
    assert not store.exists(SID)
    assert store.write(SID, plan(sets={b"a": b"2"}), invalidate_redis=False).status == -1


def test_fixed_expiry_in_the_past_deletes_on_update(store):
    """An update under a fixed expiry that has passed ends the session (status -2)."""
    created(store, a=b"1")
    result = store.write(
        SID, plan(idle=0, fixed_expiry=int(time.time()) - 5), invalidate_redis=False
    )
    assert result.status == -2
    assert not DurableSession.objects.filter(pk=SID).exists()


def test_expiry_never_passes_the_deadline(store):
    """The idle timeout slides, but the expiry stops at the absolute deadline."""
    created(store, a=b"1")
    DurableSession.objects.filter(pk=SID).update(deadline=int(time.time()) + 100)
    result = store.write(SID, plan(sets={b"a": b"2"}), invalidate_redis=False)
    assert result.status == 1
    assert result.expires_at <= int(time.time()) + 100


def test_cycle_key_create_inherits_created_and_deadline(store):
    """A create carrying the old session's metadata keeps its times."""
    meta = SessionMeta(created=1_700_000_000, deadline=int(time.time()) + 500, idle=DAY)
    owner = IndexChange(add_user="7", remove_user=None, deadline=meta.deadline)
    result = store.write(
        SID, plan(create=True, inherited_meta=meta, index=owner), invalidate_redis=False
    )
    assert result.status == 1
    assert result.meta is not None
    assert (result.meta.created, result.meta.deadline) == (meta.created, meta.deadline)
    assert DurableSession.objects.get(pk=SID).user_id == "7"


def test_owner_is_kept_for_per_user_lookups(store):
    """The write records the session's user; a logout write clears it."""
    created(store, a=b"1")
    login = IndexChange(add_user="42", remove_user=None, deadline=0)
    store.write(SID, plan(sets={b"u": b"42"}, index=login), invalidate_redis=False)
    assert DurableSession.objects.get(pk=SID).user_id == "42"
    store.write(SID, plan(sets={b"v": b"1"}), invalidate_redis=False)
    assert DurableSession.objects.get(pk=SID).user_id == "42"
    logout = IndexChange(add_user=None, remove_user="42", deadline=0)
    store.write(SID, plan(deletes=[b"u"], index=logout), invalidate_redis=False)
    assert DurableSession.objects.get(pk=SID).user_id is None
    assert store.delete(SID, invalidate_redis=False) is None


def test_touch_moves_the_expiry_forward_only_and_never_past_the_deadline(store):
    """A touch extends the expiry; an older touch never shortens it."""
    created(store, a=b"1")
    now = int(time.time())
    assert store.touch(SID, now + 2 * DAY)
    assert DurableSession.objects.get(pk=SID).expires_at == now + 2 * DAY
    assert not store.touch(SID, now + DAY)
    assert DurableSession.objects.get(pk=SID).expires_at == now + 2 * DAY
    assert store.touch(SID, now + 100 * DAY)
    row = DurableSession.objects.get(pk=SID)
    assert row.expires_at == row.deadline


def test_writes_while_redis_is_unreachable_queue_an_invalidation(store):
    """invalidate_redis queues the session once, whatever the number of writes."""
    created(store, a=b"1")
    store.write(SID, plan(sets={b"a": b"2"}), invalidate_redis=True)
    store.write(SID, plan(sets={b"a": b"3"}), invalidate_redis=True)
    entries = store.queued_invalidations(10)
    assert [sid for sid, _ in entries] == [SID]
    # Queued again after the read: the newer entry survives forgetting the old.
    store.write(SID, plan(sets={b"a": b"4"}), invalidate_redis=True)
    store.forget_invalidations(entries)
    assert [sid for sid, _ in store.queued_invalidations(10)] == [SID]
    store.forget_invalidations(store.queued_invalidations(10))
    assert store.queued_invalidations(10) == []
    store.delete(SID, invalidate_redis=True)
    assert RedisInvalidation.objects.filter(pk=SID).exists()


def test_purge_expired_deletes_ended_sessions_with_their_fields(store):
    """Garbage collection removes ended rows (fields cascade) in batches."""
    created(store, a=b"1")
    DurableSession.objects.filter(pk=SID).update(expires_at=1)
    assert store.purge_expired(int(time.time()), batch_size=10) == 1
    assert store.purge_expired(int(time.time()), batch_size=10) == 0


async def test_async_twins(store):
    """aload, awrite, adelete, aexists and atouch behave like the sync methods."""
    result = await store.awrite(SID, plan(create=True, sets={b"a": b"1"}), invalidate_redis=False)
    assert result.status == 1
    assert await store.aexists(SID)
    await store.awrite(SID, plan(sets={b"b": b"2"}), invalidate_redis=False)
    record = await store.aload(SID)
    assert record is not None
    assert record.fields == {b"a": b"1", b"b": b"2"}
    assert await store.atouch(SID, int(time.time()) + 2 * DAY)
    await store.adelete(SID, invalidate_redis=False)
    assert await store.aload(SID) is None


def test_a_key_changing_form_keeps_one_row(store):
    """A key stored as text, then serialized, is one row updated in place; its
    other forms named in the plan's deletes do not delete the new value."""
    created(store, **{"\x01a": b"x"})
    store.write(
        SID,
        plan(sets={b"a": b"1"}, deletes=[b"\x01a", b"\x03a"]),
        invalidate_redis=False,
    )
    record = store.load(SID)
    assert record is not None
    assert record.fields == {b"a": b"1"}
    assert DurableSessionField.objects.filter(session_id=SID).count() == 1
    store.write(SID, plan(deletes=[b"\x01a", b"\x03a", b"a"]), invalidate_redis=False)
    assert DurableSessionField.objects.filter(session_id=SID).count() == 0
    record = store.load(SID)
    assert record is not None
    assert record.fields == {}
