"""The behaviour every elastic engine owes Django's ``SessionBase`` contract.

Each engine's test module subclasses :class:`SessionContract` and names its
``SessionStore``; every test has a sync form and an async twin (``test_a...``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.utils import timezone

from elastic_sessions.keys import storage_id


class SessionContract:
    SessionStore: Any

    @pytest.fixture(autouse=True)
    def _store(self):
        self.session = self.SessionStore()

    def reload(self, key=None):
        return self.SessionStore(key or self.session.session_key)

    # -- a new session ------------------------------------------------------
    def test_new_session_is_empty(self):
        """A new session has no key, no data and is neither accessed nor modified."""
        assert self.session.session_key is None
        assert not self.session.modified
        assert not self.session.accessed
        assert list(self.session.items()) == []

    async def test_anew_session_is_empty(self):
        """A new session reads as empty through the async API."""
        assert list(await self.session.aitems()) == []
        assert self.session.session_key is None

    # -- item access --------------------------------------------------------
    def test_set_get_pop_setdefault_update(self):
        """Item access behaves like a dict and marks the session modified."""
        self.session["a"] = 1
        assert self.session.modified
        assert self.session.get("a") == 1
        assert self.session.get("missing", "dflt") == "dflt"
        assert self.session.setdefault("b", 2) == 2
        assert self.session.setdefault("b", 3) == 2
        self.session.update({"c": [1, 2]})
        assert "c" in self.session
        assert self.session.has_key("c")
        assert sorted(self.session.keys()) == ["a", "b", "c"]
        assert self.session.pop("a") == 1
        assert self.session.pop("a", "gone") == "gone"
        with pytest.raises(KeyError):
            self.session.pop("a")

    async def test_aset_get_pop_setdefault_update(self):
        """The async item API behaves like the sync one."""
        await self.session.aset("a", 1)
        assert await self.session.aget("a") == 1
        assert await self.session.aget("missing", "dflt") == "dflt"
        assert await self.session.asetdefault("b", 2) == 2
        assert await self.session.asetdefault("b", 3) == 2
        await self.session.aupdate({"c": [1, 2]})
        assert await self.session.ahas_key("c")
        assert sorted(await self.session.akeys()) == ["a", "b", "c"]
        assert await self.session.apop("a") == 1
        assert await self.session.apop("a", "gone") == "gone"

    # -- save and load ------------------------------------------------------
    def test_save_and_load_round_trip(self):
        """Saved data of every JSON type comes back equal under the same key."""
        data = {
            "int": 1,
            "float": 1.5,
            "str": "héllo\x00",
            "list": [1, "x"],
            "dict": {"k": None},
            "bool": True,
            "none": None,
            "long": "y" * 500,
            "": "empty key",
            "\x00k": 1,
        }
        self.session.update(data)
        self.session.save()
        loaded = self.reload()
        assert dict(loaded.items()) == data
        assert loaded.session_key == self.session.session_key

    async def test_asave_and_aload_round_trip(self):
        """Async save and load round-trip the data."""
        await self.session.aupdate({"x": [1, 2, 3], "s": "text"})
        await self.session.asave()
        loaded = self.reload()
        assert dict(await loaded.aitems()) == {"x": [1, 2, 3], "s": "text"}

    def test_save_without_key_creates(self):
        """save() on a keyless session creates it under a fresh, valid key."""
        self.session["a"] = 1
        self.session.save()
        assert self.session.session_key is not None
        assert self.session.exists(self.session.session_key)

    async def test_asave_without_key_creates(self):
        """asave() on a keyless session creates it."""
        await self.session.aset("a", 1)
        await self.session.asave()
        assert await self.session.aexists(self.session.session_key)

    def test_create_makes_empty_session_that_exists(self):
        """create() stores an empty session under a new key before returning."""
        self.session.create()
        assert self.session.exists(self.session.session_key)
        assert self.session.modified

    async def test_acreate_makes_empty_session_that_exists(self):
        """acreate() stores an empty session under a new key before returning."""
        await self.session.acreate()
        assert await self.session.aexists(self.session.session_key)

    def test_must_create_on_existing_key_raises_create_error(self):
        """save(must_create=True) refuses a key that exists: creation is atomic."""
        self.session["a"] = 1
        self.session.save()
        other = self.SessionStore(self.session.session_key)
        other["b"] = 2
        with pytest.raises(CreateError):
            other.save(must_create=True)
        assert "b" not in self.reload()

    async def test_amust_create_on_existing_key_raises_create_error(self):
        """asave(must_create=True) refuses a key that exists."""
        await self.session.aset("a", 1)
        await self.session.asave()
        other = self.SessionStore(self.session.session_key)
        with pytest.raises(CreateError):
            await other.asave(must_create=True)

    def test_unknown_key_is_not_adopted(self):
        """Loading a well-formed but unknown key starts a new session under a new key."""
        foreign = "a" * 32
        session = self.SessionStore(foreign)
        session["x"] = 1
        session.save()
        assert session.session_key != foreign
        assert not session.exists(foreign)

    async def test_aunknown_key_is_not_adopted(self):
        """The async load never adopts an unknown key either."""
        foreign = "b" * 32
        session = self.SessionStore(foreign)
        await session.aset("x", 1)
        await session.asave()
        assert session.session_key != foreign
        assert not await session.aexists(foreign)

    # -- update of a vanished session ---------------------------------------
    def test_save_after_delete_raises_update_error(self):
        """Saving a session deleted meanwhile raises UpdateError and does not recreate it."""
        self.session["a"] = 1
        self.session.save()
        stale = self.reload()
        assert stale["a"] == 1
        self.reload().delete()
        stale["a"] = 2
        with pytest.raises(UpdateError):
            stale.save()
        assert not self.session.exists(self.session.session_key)

    async def test_asave_after_delete_raises_update_error(self):
        """asave() of a session deleted meanwhile raises UpdateError."""
        await self.session.aset("a", 1)
        await self.session.asave()
        stale = self.reload()
        await stale.aget("a")
        await self.reload().adelete()
        await stale.aset("a", 2)
        with pytest.raises(UpdateError):
            await stale.asave()
        assert not await self.session.aexists(self.session.session_key)

    # -- delete, flush, cycle -----------------------------------------------
    def test_delete_and_flush(self):
        """delete() removes the stored session; flush() also clears data and key."""
        self.session["a"] = 1
        self.session.save()
        key = self.session.session_key
        self.session.flush()
        assert self.session.session_key is None
        assert list(self.session.items()) == []
        assert not self.session.exists(key)

    async def test_adelete_and_aflush(self):
        """aflush() clears data and key and removes the stored session."""
        await self.session.aset("a", 1)
        await self.session.asave()
        key = self.session.session_key
        await self.session.aflush()
        assert self.session.session_key is None
        assert not await self.session.aexists(key)

    def test_delete_of_unknown_or_malformed_key_is_harmless(self):
        """Deleting a key that does not exist, or could not exist, does nothing."""
        self.session.delete("c" * 32)
        self.session.delete("not a key")
        self.session.delete()

    def test_cycle_key_keeps_data_under_new_key(self):
        """cycle_key() moves the data to a new key and removes the old one."""
        self.session["a"] = [1, 2]
        self.session.save()
        old = self.session.session_key
        self.session.cycle_key()
        assert self.session.session_key != old
        assert not self.session.exists(old)
        assert self.reload()["a"] == [1, 2]

    async def test_acycle_key_keeps_data_under_new_key(self):
        """acycle_key() moves the data to a new key and removes the old one."""
        await self.session.aset("a", [1, 2])
        await self.session.asave()
        old = self.session.session_key
        await self.session.acycle_key()
        assert self.session.session_key != old
        assert not await self.session.aexists(old)
        assert await self.reload().aget("a") == [1, 2]

    def test_cycle_key_of_new_session(self):
        """cycle_key() on a session never saved creates it with its data."""
        self.session["a"] = 1
        self.session.cycle_key()
        assert self.reload()["a"] == 1

    # -- expiry -------------------------------------------------------------
    def test_default_expiry(self, settings):
        """Without set_expiry the age is SESSION_COOKIE_AGE, in store and cookie."""
        settings.SESSION_COOKIE_AGE = 1000
        self.session["a"] = 1
        self.session.save()
        assert 995 <= self.session.get_expiry_age() <= 1000
        assert 990 <= self.stored_ttl(self.session.session_key) <= 1000
        assert not self.session.get_expire_at_browser_close()

    async def test_adefault_expiry(self, settings):
        """aget_expiry_age() follows SESSION_COOKIE_AGE."""
        settings.SESSION_COOKIE_AGE = 1000
        await self.session.aset("a", 1)
        await self.session.asave()
        assert 995 <= await self.session.aget_expiry_age() <= 1000

    def test_custom_expiry_seconds(self):
        """set_expiry(seconds) sets the store's TTL and the cookie age."""
        self.session.set_expiry(300)
        self.session["a"] = 1
        self.session.save()
        assert self.reload().get_expiry_age() <= 300
        assert 295 <= self.stored_ttl(self.session.session_key) <= 300

    def test_custom_expiry_datetime(self):
        """set_expiry(datetime) fixes the expiry at that moment."""
        self.session.set_expiry(timezone.now() + timedelta(seconds=120))
        self.session["a"] = 1
        self.session.save()
        assert 115 <= self.stored_ttl(self.session.session_key) <= 120
        assert 115 <= self.reload().get_expiry_age() <= 120

    async def test_acustom_expiry(self):
        """aset_expiry() works like set_expiry()."""
        await self.session.aset_expiry(200)
        await self.session.aset("a", 1)
        await self.session.asave()
        assert 195 <= self.stored_ttl(self.session.session_key) <= 200
        await self.session.aset_expiry(None)
        assert await self.session.aget("_session_expiry") is None

    def test_expire_at_browser_close(self):
        """set_expiry(0) makes a browser-session cookie but keeps a stored TTL."""
        self.session.set_expiry(0)
        self.session["a"] = 1
        self.session.save()
        assert self.session.get_expire_at_browser_close()
        assert self.stored_ttl(self.session.session_key) > 0

    def test_non_positive_expiry_deletes(self):
        """Saving with a non-positive expiry age ends the session instead of storing it."""
        self.session["a"] = 1
        self.session.save()
        key = self.session.session_key
        self.session.set_expiry(-5)
        self.session.save()
        assert not self.session.exists(key)

    async def test_anon_positive_expiry_deletes(self):
        """asave() with an expiry in the past ends the session."""
        await self.session.aset("a", 1)
        await self.session.asave()
        key = self.session.session_key
        await self.session.aset_expiry(timezone.now() - timedelta(seconds=10))
        await self.session.asave()
        assert not await self.session.aexists(key)

    # -- test cookie --------------------------------------------------------
    def test_test_cookie(self):
        """The test-cookie helpers round-trip."""
        self.session.set_test_cookie()
        assert self.session.test_cookie_worked()
        self.session.delete_test_cookie()
        assert not self.session.test_cookie_worked()

    async def test_atest_cookie(self):
        """The async test-cookie helpers round-trip."""
        await self.session.aset_test_cookie()
        assert await self.session.atest_cookie_worked()
        await self.session.adelete_test_cookie()
        assert not await self.session.atest_cookie_worked()

    # -- clear_expired ------------------------------------------------------
    def test_clear_expired_runs(self):
        """clear_expired() is callable (manage.py clearsessions must not crash)."""
        self.SessionStore.clear_expired()

    async def test_aclear_expired_runs(self):
        """aclear_expired() is callable."""
        await self.SessionStore.aclear_expired()

    # -- engine hook --------------------------------------------------------
    def stored_ttl(self, session_key: str) -> int:
        raise NotImplementedError


def redis_key_of(session_key: str | None) -> str:
    assert session_key is not None
    from elastic_sessions.keys import session_redis_key

    return session_redis_key(storage_id(session_key))
