"""Encryption at rest (ENCRYPTION_KEYS): both engines pass the contract with it on;
values are bound to their session and key; rotation and switch-over sign no one out;
a tampered value is dropped with a security log, never a 500."""

from __future__ import annotations

import logging
from io import StringIO

import pytest
from django.contrib.auth import SESSION_KEY
from django.core.management import call_command
from django.test import Client

from elastic_sessions.backends.hybrid import SessionStore as HybridStore
from elastic_sessions.backends.redis import SessionStore as RedisStore
from elastic_sessions.codec import ENCRYPTED_MARK
from elastic_sessions.keys import storage_id
from elastic_sessions.models import DurableSessionField

from .contract import SessionContract, redis_key_of

OLD_KEY = "old-secret-" + "o" * 40
NEW_KEY = "new-secret-" + "n" * 40


@pytest.fixture
def encrypted(settings, elastic_redis):
    settings.ELASTIC_SESSIONS = {"REDIS_URL": elastic_redis.url, "ENCRYPTION_KEYS": [NEW_KEY]}


class TestRedisEngineContractEncrypted(SessionContract):
    SessionStore = RedisStore

    @pytest.fixture(autouse=True)
    def _redis(self, elastic_redis, encrypted):
        self.redis = elastic_redis.client()

    def stored_ttl(self, session_key: str) -> int:
        return int(self.redis.ttl(redis_key_of(session_key)))


@pytest.mark.django_db(transaction=True)
@pytest.mark.database
class TestHybridEngineContractEncrypted(SessionContract):
    SessionStore = HybridStore

    @pytest.fixture(autouse=True)
    def _stores(self, elastic_redis, encrypted):
        self.redis = elastic_redis.client()

    def stored_ttl(self, session_key: str) -> int:
        return int(self.redis.ttl(redis_key_of(session_key)))


def stored_fields(r, session_key):
    return r.hgetall(redis_key_of(session_key))


def test_values_are_stored_encrypted_except_the_user_id(encrypted, elastic_redis):
    """Every value but _auth_user_id is stored under the encrypted mark, unreadable."""
    session = RedisStore()
    session.update({SESSION_KEY: "42", "card": "4111 1111 1111 1111", "cart": [1, 2]})
    session.save()
    fields = stored_fields(elastic_redis.client(), session.session_key)
    assert fields[b"\x01" + SESSION_KEY.encode()] == b"42"
    sealed = {name: value for name, value in fields.items() if name[:1] == ENCRYPTED_MARK}
    assert set(sealed) == {b"\x08card", b"\x08cart"}
    assert all(b"4111" not in value and b"[1,2]" not in value for value in sealed.values())
    loaded = RedisStore(session.session_key)
    assert loaded["card"] == "4111 1111 1111 1111" and loaded["cart"] == [1, 2]


def test_an_unchanged_request_rewrites_nothing(encrypted, elastic_redis):
    """Changes are found by value, not by ciphertext: an unchanged re-save writes nothing."""
    session = RedisStore()
    session["cart"] = [1, 2]
    session.save()
    r = elastic_redis.client()
    before = stored_fields(r, session.session_key)
    loaded = RedisStore(session.session_key)
    assert loaded["cart"] == [1, 2]
    loaded.modified = True
    loaded.save()
    assert stored_fields(r, session.session_key) == before


def test_a_value_swapped_between_sessions_does_not_decrypt(encrypted, elastic_redis, caplog):
    """A sealed value copied into another session is dropped and logged as a security event."""
    victim, attacker = RedisStore(), RedisStore()
    victim["role"] = "admin"
    victim.save()
    attacker["role"] = "user"
    attacker["other"] = 1
    attacker.save()
    r = elastic_redis.client()
    stolen = r.hget(redis_key_of(victim.session_key), b"\x08role")
    r.hset(redis_key_of(attacker.session_key), b"\x08role", stolen)
    with caplog.at_level(logging.WARNING, logger="django.security.SuspiciousSession"):
        loaded = RedisStore(attacker.session_key)
        assert "role" not in loaded
        assert loaded["other"] == 1
    assert "cannot be decrypted" in caplog.text
    assert attacker.session_key not in caplog.text


def test_a_value_moved_to_another_key_does_not_decrypt(encrypted, elastic_redis):
    """A sealed value moved under another key of the same session is dropped."""
    session = RedisStore()
    session.update({"role": "admin", "nick": "x"})
    session.save()
    r = elastic_redis.client()
    key = redis_key_of(session.session_key)
    r.hset(key, b"\x08nick", r.hget(key, b"\x08role"))
    loaded = RedisStore(session.session_key)
    assert loaded.get("nick") is None and loaded["role"] == "admin"


@pytest.mark.parametrize(
    "garbage", [b"", b"\x01", b"\x01" + b"\x00" * 40, b"\x02" + b"x" * 60, b"\xff" * 1000]
)
def test_tampered_values_never_fail_a_request(encrypted, elastic_redis, garbage):
    """Garbage under the encrypted mark reads as an absent key over HTTP: a 200, not a 500."""
    client = Client()
    client.get("/set/a/1/")
    session_key = client.cookies["sessionid"].value
    elastic_redis.client().hset(redis_key_of(session_key), b"\x08a", garbage)
    response = client.get("/get/a/")
    assert response.status_code == 200
    assert response.json() == {"value": None}


def test_rotation_signs_no_one_out_and_reencrypts_lazily(settings, elastic_redis):
    """A new first key still reads values of the old one; the next write seals them anew."""
    settings.ELASTIC_SESSIONS = {"REDIS_URL": elastic_redis.url, "ENCRYPTION_KEYS": [OLD_KEY]}
    session = RedisStore()
    session.update({"cart": [1], "theme": "dark"})
    session.save()
    r = elastic_redis.client()
    old = stored_fields(r, session.session_key)
    settings.ELASTIC_SESSIONS = {
        "REDIS_URL": elastic_redis.url,
        "ENCRYPTION_KEYS": [NEW_KEY, OLD_KEY],
    }
    loaded = RedisStore(session.session_key)
    assert loaded["theme"] == "dark"
    loaded["cart"] = [1, 2]  # a write: every stale value is sealed again
    loaded.save()
    new = stored_fields(r, session.session_key)
    assert new[b"\x08theme"] != old[b"\x08theme"]
    settings.ELASTIC_SESSIONS = {"REDIS_URL": elastic_redis.url, "ENCRYPTION_KEYS": [NEW_KEY]}
    assert dict(RedisStore(session.session_key).items()) == {"cart": [1, 2], "theme": "dark"}


def test_switch_over_from_clear_to_encrypted(settings, elastic_redis):
    """Clear sessions stay readable once encryption is on, and are sealed at their next write."""
    clear = RedisStore()
    clear.update({"cart": [1], "theme": "dark"})
    clear.save()
    settings.ELASTIC_SESSIONS = {"REDIS_URL": elastic_redis.url, "ENCRYPTION_KEYS": [NEW_KEY]}
    loaded = RedisStore(clear.session_key)
    assert loaded["cart"] == [1]
    loaded["visits"] = 1
    loaded.save()
    names = set(stored_fields(elastic_redis.client(), clear.session_key))
    assert {b"\x08cart", b"\x08theme", b"\x08visits"} <= names
    assert not names & {b"cart", b"\x01theme"}


@pytest.mark.django_db
@pytest.mark.database
def test_hybrid_database_rows_hold_sealed_values(settings, elastic_redis):
    """The hybrid engine's field rows are sealed too; the session reads back from them."""
    settings.ELASTIC_SESSIONS = {"REDIS_URL": elastic_redis.url, "ENCRYPTION_KEYS": [NEW_KEY]}
    session = HybridStore()
    session.update({SESSION_KEY: "7", "secret_note": "meet at noon"})
    session.save()
    rows = {
        bytes(name): bytes(value)
        for name, value in DurableSessionField.objects.filter(
            session_id=storage_id(session.session_key)
        ).values_list("name", "value")
    }
    assert b"\x08secret_note" in rows and b"noon" not in rows[b"\x08secret_note"]
    elastic_redis.client().flushall()  # Redis lost: the database copy is read
    assert HybridStore(session.session_key)["secret_note"] == "meet at noon"


def test_bad_keys_are_a_configuration_error(settings, elastic_redis):
    """Keys shorter than 32 characters are refused by manage.py check (E005)."""
    settings.ELASTIC_SESSIONS = {"REDIS_URL": elastic_redis.url, "ENCRYPTION_KEYS": ["short"]}
    from django.core.management.base import SystemCheckError

    with pytest.raises(SystemCheckError, match="ENCRYPTION_KEYS"):
        call_command("check")


def reencrypt(*args):
    out = StringIO()
    call_command("reencrypt_sessions_elastic", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
@pytest.mark.database
@pytest.mark.parametrize("store", [RedisStore, HybridStore])
def test_reencrypt_command_then_the_old_key_can_go(settings, elastic_redis, store):
    """After the command, every value is under the new key: removing the old one loses nothing."""
    settings.ELASTIC_SESSIONS = {"REDIS_URL": elastic_redis.url, "ENCRYPTION_KEYS": [OLD_KEY]}
    sessions = []
    for n in range(5):
        session = store()
        session.update({SESSION_KEY: str(n), "cart": [n], "note": f"note {n}"})
        session.save()
        sessions.append(session.session_key)
    clear = store()  # one from before encryption: in the clear
    settings.ELASTIC_SESSIONS = {"REDIS_URL": elastic_redis.url}
    clear["note"] = "clear note"
    clear.save()
    settings.ELASTIC_SESSIONS = {
        "REDIS_URL": elastic_redis.url,
        "ENCRYPTION_KEYS": [NEW_KEY, OLD_KEY],
    }
    assert "would rewrite" in reencrypt("--dry-run")
    summary = reencrypt()
    assert "unreadable with the configured keys: 0" in summary
    assert reencrypt().count(": 0;") >= 2  # a second run finds nothing left
    settings.ELASTIC_SESSIONS = {"REDIS_URL": elastic_redis.url, "ENCRYPTION_KEYS": [NEW_KEY]}
    for n, session_key in enumerate(sessions):
        assert store(session_key)["note"] == f"note {n}"
    assert store(clear.session_key)["note"] == "clear note"
    if store is HybridStore:
        elastic_redis.client().flushall()  # from the database rows alone
        assert store(sessions[0])["cart"] == [0]


def test_reencrypt_leaves_a_value_written_meanwhile(settings, elastic_redis):
    """The rewrite is a compare-and-set: a value changed since it was read is kept."""
    from elastic_sessions.encryption import keyring
    from elastic_sessions.reencryption import ReencryptionReport, _plan, rewrite_script
    from elastic_sessions.storage.scripts import run_calls

    settings.ELASTIC_SESSIONS = {"REDIS_URL": elastic_redis.url, "ENCRYPTION_KEYS": [OLD_KEY]}
    session = RedisStore()
    session["note"] = "old"
    session.save()
    settings.ELASTIC_SESSIONS = {
        "REDIS_URL": elastic_redis.url,
        "ENCRYPTION_KEYS": [NEW_KEY, OLD_KEY],
    }
    r = elastic_redis.client()
    key = redis_key_of(session.session_key)
    sid = storage_id(session.session_key)
    changes = _plan(keyring(), sid, r.hgetall(key), ReencryptionReport())
    assert len(changes) == 1
    newer = RedisStore(session.session_key)  # a request writes meanwhile
    newer["note"] = "newer"
    newer.save()
    args = [item for change in changes for item in change[:3]] + [c[3] for c in changes]
    assert run_calls(r, [(rewrite_script, [key], args)]) == [0]
    assert RedisStore(session.session_key)["note"] == "newer"


def test_none_first_turns_encryption_off_without_logouts(settings, elastic_redis):
    """With None first, sealed values still read, and writes (and the command) store them clear."""
    settings.ELASTIC_SESSIONS = {"REDIS_URL": elastic_redis.url, "ENCRYPTION_KEYS": [OLD_KEY]}
    session = RedisStore()
    session.update({"note": "x", "cart": [1]})
    session.save()
    settings.ELASTIC_SESSIONS = {
        "REDIS_URL": elastic_redis.url,
        "ENCRYPTION_KEYS": [None, OLD_KEY],
    }
    loaded = RedisStore(session.session_key)
    loaded["cart"] = [1, 2]
    loaded.save()
    names = set(stored_fields(elastic_redis.client(), session.session_key))
    assert not any(name[:1] == ENCRYPTED_MARK for name in names)
    settings.ELASTIC_SESSIONS = {"REDIS_URL": elastic_redis.url}
    assert dict(RedisStore(session.session_key).items()) == {"note": "x", "cart": [1, 2]}


@pytest.mark.django_db
@pytest.mark.database
@pytest.mark.parametrize("store", [RedisStore, HybridStore])
def test_admin_detail_shows_encrypted_sessions_in_the_clear(encrypted, settings, store):
    """The admin's detail of an encrypted session holds its decrypted items."""
    from elastic_sessions import listing

    settings.SESSION_ENGINE = store.__module__
    session = store()
    session.update({SESSION_KEY: "5", "cart": [1, 2]})
    session.save()
    found = listing.detail(storage_id(session.session_key))
    assert found is not None and found.data is not None
    assert found.data["cart"] == [1, 2] and found.row.user_id == "5"
