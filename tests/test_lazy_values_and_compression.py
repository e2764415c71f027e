"""Large values decoded on first read, compression, field variants, memory, the load
packet (NOSCRIPT, RESP2), the touch throttle and the absolute deadline."""

from __future__ import annotations

import ast
import copy
import json
import logging
import pickle
import random
import string
import struct
import time
import zlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.signing import JSONSerializer
from django.test import AsyncClient, Client
from django.utils import timezone

from benchmarks.shapes import SIZES, build
from elastic_sessions.backends.redis import SessionStore
from elastic_sessions.codec import META_FIELD, Encoded
from elastic_sessions.connection import get_async_client, get_client
from elastic_sessions.keys import storage_id
from elastic_sessions.session_data import SessionData
from elastic_sessions.signals import session_created

from .contract import redis_key_of
from .roundtrips import count_round_trips

# Serialized well over COMPRESS_MIN_BYTES and very repetitive: stored compressed.
BIG = {
    "items": [{"sku": f"SKU-{i:05d}", "name": "Walnut linen", "qty": i % 4 + 1} for i in range(30)],
    "currency": "EUR",
}
# 81 bytes serialized: over the eager-decode limit (64), under COMPRESS_MIN_BYTES.
MID = list(range(30))
EXPECTED = {"a": 1, "name": "x", "cart": BIG, "mid": MID}
LAZY_KEYS = ("cart", "mid")


def _incompressible(length: int) -> str:
    # Random printable ASCII: JSON text zlib cannot shrink by an eighth at this size.
    rng = random.Random("elastic-sessions-incompressible")
    alphabet = string.ascii_letters + string.digits + "!#$%&()*+,-./:;<=>?@[]^_{|}~ "
    return "".join(rng.choice(alphabet) for _ in range(length))


NOISE = _incompressible(300)


def json_bytes(value):
    """What Django's JSONSerializer stores for ``value``."""
    return JSONSerializer().dumps(value)


class PlainJSONSerializer(JSONSerializer):
    """A serializer that is not Django's own class: strings go through it too."""


@pytest.fixture
def r(elastic_redis):
    return elastic_redis.client()


def with_settings(settings, **extra):
    settings.ELASTIC_SESSIONS = {**settings.ELASTIC_SESSIONS, **extra}


def saved(**data):
    session = SessionStore()
    session.update(data)
    session.save()
    assert session.session_key is not None
    return session.session_key


def data_fields(r, key):
    """The hash fields of a session as stored, without its metadata."""
    fields = r.hgetall(redis_key_of(key))
    return {name: value for name, value in fields.items() if name != META_FIELD}


def stored_meta(r, key):
    return struct.unpack(">III", r.hget(redis_key_of(key), META_FIELD))


def loaded(key):
    """A session of ``key`` after a load that read only the small key ``a``."""
    session = SessionStore(key)
    assert session["a"] == 1
    return session


def raw_data(session):
    data = session._session
    assert isinstance(data, SessionData)
    return data


async def araw_data(session):
    data = await session._aget_session()
    assert isinstance(data, SessionData)
    return data


def is_encoded(data, key):
    return type(dict.__getitem__(data, key)) is Encoded


# -- lazy decoding ----------------------------------------------------------------
def test_large_values_stay_encoded_until_read():
    """Values over 64 serialized bytes stay Encoded after the load until one is read."""
    key = saved(**EXPECTED)
    session = loaded(key)
    data = raw_data(session)
    assert data.pending_values() == 2
    assert is_encoded(data, "cart")
    assert is_encoded(data, "mid")
    assert not is_encoded(data, "a")
    assert not is_encoded(data, "name")
    assert session["cart"] == BIG
    assert dict.__getitem__(data, "cart") == BIG
    assert data.pending_values() == 1
    assert is_encoded(data, "mid")


async def test_async_large_values_stay_encoded_until_read():
    """The async load leaves large values Encoded too, and aget decodes one."""
    key = saved(**EXPECTED)
    session = SessionStore(key)
    assert await session.aget("a") == 1
    data = await araw_data(session)
    assert data.pending_values() == 2
    assert is_encoded(data, "mid")
    assert await session.aget("mid") == MID
    assert data.pending_values() == 1
    assert is_encoded(data, "cart")


def test_reading_a_large_value_costs_no_round_trip():
    """A load with large values is 1 round trip; reading them later costs none."""
    key = saved(**EXPECTED)
    SessionStore().exists("x" * 32)  # warm the pool
    with count_round_trips() as load:
        session = loaded(key)
    with count_round_trips() as reads:
        assert session["cart"] == BIG
        assert session.get("mid") == MID
    assert (load.count, reads.count) == (1, 0)


def _as_kwargs(**kwargs):
    return kwargs


def _updated_plain_dict(data):
    out = {}
    out.update(data)
    return out


def _popitem_all(data):
    out = {}
    while data:
        key, value = data.popitem()
        out[key] = value
    return out


# Each operation returns what it handed out, as a dict to compare with EXPECTED.
HAND_OUTS: dict[str, Callable[[SessionData], dict[str, Any]]] = {
    "items": lambda d: dict(d.items()),
    "values": lambda d: dict(zip(d.keys(), d.values(), strict=True)),
    "copy": lambda d: d.copy(),
    "dict()": dict,
    "{**x}": lambda d: {**d},
    "f(**x)": lambda d: _as_kwargs(**d),
    "x | y": lambda d: d | {},
    "y | x": lambda d: {} | d,
    "dict.update(y, x)": _updated_plain_dict,
    "pickle": lambda d: pickle.loads(pickle.dumps(d)),
    "copy.copy": copy.copy,
    "copy.deepcopy": copy.deepcopy,
    "json.dumps": lambda d: json.loads(json.dumps(d)),
    "json.dumps indent": lambda d: json.loads(json.dumps(d, indent=2)),
    "repr": lambda d: ast.literal_eval(repr(d)),
    "str": lambda d: ast.literal_eval(str(d)),
    "popitem": _popitem_all,
    "pop": lambda d: {"cart": d.pop("cart"), "mid": d.pop("mid", None)},
    "setdefault": lambda d: {"cart": d.setdefault("cart", []), "mid": d.setdefault("mid")},
    "get": lambda d: {"cart": d.get("cart"), "mid": d.get("mid", 0)},
    "[]": lambda d: {"cart": d["cart"], "mid": d["mid"]},
}


@pytest.mark.parametrize("operation", HAND_OUTS)
def test_every_way_out_of_the_data_decodes(operation):
    """Every dict operation that hands out values gives decoded ones, never Encoded."""
    data = raw_data(loaded(saved(**EXPECTED)))
    assert data.pending_values() == 2
    out = HAND_OUTS[operation](data)
    assert type(out) is dict
    assert out == {key: EXPECTED[key] for key in out}
    assert set(LAZY_KEYS) <= set(out)
    json.dumps(out)  # an Encoded anywhere would not serialize


def test_equality_decodes_both_sides():
    """== and != compare decoded values, with the session on either side."""
    key = saved(**EXPECTED)
    assert raw_data(loaded(key)) == EXPECTED
    assert EXPECTED == raw_data(loaded(key))  # noqa: SIM300 - the reflected == is tested
    assert not raw_data(loaded(key)) != EXPECTED  # noqa: SIM202 - __ne__ is what is tested
    assert raw_data(loaded(key)) != {**EXPECTED, "mid": []}
    first, second = raw_data(loaded(key)), raw_data(loaded(key))
    assert first == second
    assert first.pending_values() == second.pending_values() == 0


def test_pending_count_follows_writes():
    """Replacing, deleting or clearing an Encoded value takes it off the pending count."""
    key = saved(**EXPECTED)
    data = raw_data(loaded(key))
    data["cart"] = 1
    assert data.pending_values() == 1
    del data["mid"]
    assert data.pending_values() == 0
    assert data == {"a": 1, "name": "x", "cart": 1}
    data = raw_data(loaded(key))
    data.update(cart=2)
    assert data.pending_values() == 1
    data.clear()
    assert data.pending_values() == 0


def test_pickled_and_copied_data_is_a_plain_dict():
    """pickle, copy and deepcopy of the data give a plain dict of decoded values."""
    data = raw_data(loaded(saved(**EXPECTED)))
    for clone in (pickle.loads(pickle.dumps(data)), copy.copy(data), copy.deepcopy(data)):
        assert type(clone) is dict
        assert clone == EXPECTED
        assert not any(type(value) is Encoded for value in clone.values())


def test_in_place_or_replaces_values():
    """x |= y replaces an Encoded value and leaves the others readable."""
    data = raw_data(loaded(saved(**EXPECTED)))
    data |= {"cart": 1}
    assert data == {**EXPECTED, "cart": 1}


def test_session_api_returns_decoded_values():
    """The SessionStore API hands out decoded values, and its items dump as JSON."""
    key = saved(**EXPECTED)
    assert json.loads(json.dumps(dict(loaded(key).items()))) == EXPECTED
    assert sorted(map(json.dumps, loaded(key).values())) == sorted(
        map(json.dumps, EXPECTED.values())
    )
    assert loaded(key).get("cart") == BIG
    assert loaded(key)["mid"] == MID
    assert loaded(key).setdefault("cart", []) == BIG
    session = loaded(key)
    assert session.pop("cart") == BIG
    session.save()
    assert set(SessionStore(key).keys()) == {"a", "name", "mid"}


async def test_async_session_api_returns_decoded_values():
    """The async API (aitems, avalues, aget, asetdefault, apop) hands out decoded values."""
    key = saved(**EXPECTED)
    assert json.loads(json.dumps(dict(await SessionStore(key).aitems()))) == EXPECTED
    values = await SessionStore(key).avalues()
    assert sorted(map(json.dumps, values)) == sorted(map(json.dumps, EXPECTED.values()))
    assert await SessionStore(key).aget("cart") == BIG
    assert await SessionStore(key).asetdefault("mid", None) == MID
    session = SessionStore(key)
    assert await session.apop("cart") == BIG
    await session.asave()
    assert set(await SessionStore(key).akeys()) == {"a", "name", "mid"}


# -- never re-encoded unread ------------------------------------------------------
def test_save_never_rewrites_a_value_that_was_not_read(r):
    """A save after reading only a small key leaves the stored bytes of large values alone."""
    key = saved(**EXPECTED)
    session = loaded(key)
    rkey = redis_key_of(key)
    # Changed behind the session's back: a rewrite would restore the loaded value.
    r.hset(rkey, mapping={b"\x03cart": b"left alone", b"mid": b"left alone too"})
    session["a"] = 2
    with count_round_trips() as save:
        session.save()
    assert save.count == 1
    fields = data_fields(r, key)
    assert fields[b"\x03cart"] == b"left alone"
    assert fields[b"mid"] == b"left alone too"
    assert fields[b"a"] == b"2"


async def test_async_save_never_rewrites_a_value_that_was_not_read(r):
    """The async save reuses the stored bytes of unread values too."""
    key = saved(**EXPECTED)
    session = SessionStore(key)
    assert await session.aget("a") == 1
    r.hset(redis_key_of(key), b"\x03cart", b"left alone")
    await session.aset("a", 2)
    await session.asave()
    assert data_fields(r, key)[b"\x03cart"] == b"left alone"
    assert data_fields(r, key)[b"a"] == b"2"


def store_unusual_encodings(r, key):
    """Valid stored forms our encoder would not produce: re-encoding them shows."""
    spaced_mid = json.dumps(MID).encode()  # "[0, 1, ...]": not compact JSON
    strong_cart = zlib.compress(json_bytes(BIG), 9)  # our encoder uses level 1
    assert spaced_mid != json_bytes(MID)
    assert strong_cart != zlib.compress(json_bytes(BIG), 1)
    unusual = {
        b"mid": spaced_mid,
        b"\x03cart": strong_cart,
        b"plain": json_bytes(BIG),  # as stored with compression off
        b"junk": b"\xff not JSON, and too long to be decoded with the load" * 2,
    }
    r.hset(redis_key_of(key), mapping=unusual)
    return unusual


def test_save_reuses_the_stored_bytes_of_unread_values(r):
    """Unread values are written back as stored, never re-encoded (nor decoded: the
    unreadable one is not noticed and the session keeps its key)."""
    key = saved(**EXPECTED)
    unusual = store_unusual_encodings(r, key)
    session = loaded(key)
    session["a"] = 2
    session.save()
    assert session.session_key == key
    assert data_fields(r, key) == {**unusual, b"a": b"2", b"\x01name": b"x"}
    reread = SessionStore(key)
    assert (reread["mid"], reread["cart"], reread["plain"]) == (MID, BIG, BIG)


async def test_async_save_reuses_the_stored_bytes_of_unread_values(r):
    """The async save writes unread values back as stored, too."""
    key = saved(**EXPECTED)
    unusual = store_unusual_encodings(r, key)
    session = SessionStore(key)
    await session.aset("a", 2)
    await session.asave()
    assert session.session_key == key
    assert data_fields(r, key) == {**unusual, b"a": b"2", b"\x01name": b"x"}


def test_value_read_but_unchanged_is_not_written(r):
    """A large value read but not changed is not sent, and an unchanged save is free."""
    key = saved(**EXPECTED)
    session = loaded(key)
    assert session["cart"] == BIG
    with count_round_trips() as unchanged:
        session.save()
    r.hset(redis_key_of(key), b"\x03cart", b"left alone")
    session["a"] = 2
    session.save()
    assert unchanged.count == 0
    assert data_fields(r, key)[b"\x03cart"] == b"left alone"


@pytest.mark.parametrize("name", LAZY_KEYS)
def test_in_place_mutation_of_lazy_value_is_saved(name):
    """Appending to a lazily decoded list and marking the session modified saves it."""
    value = {"cart": BIG["items"], "mid": MID}[name]
    key = saved(a=1, **{name: value})
    session = loaded(key)
    session[name].append({"sku": "new"})
    session.modified = True
    session.save()
    assert SessionStore(key)[name] == [*value, {"sku": "new"}]


async def test_async_in_place_mutation_of_lazy_value_is_saved():
    """The async twin: aget a lazy list, mutate it in place, asave."""
    key = saved(a=1, cart=BIG["items"])
    session = SessionStore(key)
    cart = await session.aget("cart")
    assert isinstance(cart, list)
    cart.append("more")
    session.modified = True
    await session.asave()
    assert await SessionStore(key).aget("cart") == [*BIG["items"], "more"]


# -- compression ------------------------------------------------------------------
def test_large_value_is_stored_compressed(r):
    """A large compressible value is stored zlib-compressed under \\x03 + key."""
    key = saved(a=1, cart=BIG)
    fields = data_fields(r, key)
    assert set(fields) == {b"a", b"\x03cart"}
    assert zlib.decompress(fields[b"\x03cart"]) == json_bytes(BIG)
    assert len(fields[b"\x03cart"]) < len(json_bytes(BIG))
    assert SessionStore(key)["cart"] == BIG


def test_compression_can_be_turned_off(r, settings):
    """With COMPRESS_MIN_BYTES 0 large values are stored as serialized, under the bare key."""
    with_settings(settings, COMPRESS_MIN_BYTES=0)
    key = saved(a=1, cart=BIG, text="t" * 1000)
    fields = data_fields(r, key)
    assert set(fields) == {b"a", b"cart", b"\x01text"}
    assert fields[b"cart"] == json_bytes(BIG)
    assert fields[b"\x01text"] == b"t" * 1000
    assert dict(SessionStore(key).items()) == {"a": 1, "cart": BIG, "text": "t" * 1000}


def test_compression_threshold_is_inclusive(r, settings):
    """A value serialized to exactly COMPRESS_MIN_BYTES is compressed, one byte less is not."""
    with_settings(settings, COMPRESS_MIN_BYTES=256)
    below, at = {"k": "a" * 247}, {"k": "a" * 248}
    assert (len(json_bytes(below)), len(json_bytes(at))) == (255, 256)
    key = saved(below=below, at=at)
    assert set(data_fields(r, key)) == {b"below", b"\x03at"}
    assert dict(SessionStore(key).items()) == {"below": below, "at": at}


def test_incompressible_values_stay_uncompressed(r):
    """Values zlib cannot shrink by an eighth are stored as they are."""
    serialized = json_bytes(NOISE)
    assert len(serialized) >= 256
    assert len(zlib.compress(serialized, 1)) > len(serialized) - len(serialized) // 8
    key = saved(a=1, blob=NOISE, blobs=[NOISE])
    fields = data_fields(r, key)
    assert set(fields) == {b"a", b"\x01blob", b"blobs"}
    assert fields[b"\x01blob"] == NOISE.encode()
    assert fields[b"blobs"] == json_bytes([NOISE])
    assert dict(SessionStore(key).items()) == {"a": 1, "blob": NOISE, "blobs": [NOISE]}


def test_large_compressible_strings_are_compressed(r):
    """A long repetitive str is compressed rather than stored raw, and reads back intact."""
    text = "linen oak brass " * 40
    key = saved(text=text, short="s" * 255)
    assert set(data_fields(r, key)) == {b"\x03text", b"\x01short"}
    assert dict(SessionStore(key).items()) == {"text": text, "short": "s" * 255}


def test_custom_serializer_gets_no_raw_strings(r, settings):
    """Under a serializer other than Django's JSONSerializer, strings are serialized."""
    settings.SESSION_SERIALIZER = f"{__name__}.PlainJSONSerializer"
    key = saved(name="x", cart=BIG)
    fields = data_fields(r, key)
    assert fields == {b"name": b'"x"', b"\x03cart": fields[b"\x03cart"]}
    assert dict(SessionStore(key).items()) == {"name": "x", "cart": BIG}


# -- one field per key --------------------------------------------------------------
VALUE_KINDS = [
    ("short str", "5", b"\x01k"),
    ("int", 5, b"k"),
    ("compressed", BIG, b"\x03k"),
    ("raw large str", NOISE, b"\x01k"),
    ("compressed str", "k" * 1000, b"\x03k"),
    ("lazy uncompressed", MID, b"k"),
    ("short str again", "5", b"\x01k"),
    ("int again", 5, b"k"),
    ("str again", "5", b"\x01k"),
]


def test_switching_value_kinds_leaves_exactly_one_field(r):
    """Moving a key between str, int, large and compressed values keeps one field for it."""
    key = saved(a=1)
    for kind, value, field in VALUE_KINDS:
        session = loaded(key)
        session["k"] = value
        session.save()
        assert set(data_fields(r, key)) == {b"a", field}, kind
        reread = SessionStore(key)["k"]
        assert (reread, type(reread)) == (value, type(value)), kind


async def test_async_switching_value_kinds_leaves_exactly_one_field(r):
    """The async save removes the other field variants of a key too."""
    key = saved(a=1)
    for kind, value, field in VALUE_KINDS:
        session = SessionStore(key)
        await session.aset("k", value)
        await session.asave()
        assert set(data_fields(r, key)) == {b"a", field}, kind
        assert await SessionStore(key).aget("k") == value, kind


def test_switching_back_within_one_instance_is_saved(r):
    """One instance saving "5", then 5, then "5" again ends with the str stored."""
    session = SessionStore()
    for value in ("5", 5, "5"):
        session["k"] = value
        session.save()
    reread = SessionStore(session.session_key)["k"]
    assert (reread, type(reread)) == ("5", str)


async def test_async_switching_back_within_one_instance_is_saved(r):
    """One instance saving a list, then a short str, then the list again keeps the list."""
    session = SessionStore()
    for value in (BIG, "short", BIG):
        await session.aset("k", value)
        await session.asave()
    assert await SessionStore(session.session_key).aget("k") == BIG


ODD_KEYS = ["", "\x00", "\x01x", "\x02", "\x03cart", "é"]


@pytest.mark.parametrize("name", ODD_KEYS)
def test_keys_that_look_like_field_marks_round_trip(name, r):
    """Keys starting with a mark byte (or empty) keep one field through every value kind."""
    key = saved(a=1)
    for kind, value, _ in VALUE_KINDS:
        session = loaded(key)
        session[name] = value
        session.save()
        assert len(data_fields(r, key)) == 2, kind
        assert dict(SessionStore(key).items()) == {"a": 1, name: value}, kind
    session = loaded(key)
    del session[name]
    session.save()
    assert set(data_fields(r, key)) == {b"a"}


def test_deleting_a_compressed_value_removes_its_field(r):
    """Deleting a key stored compressed leaves no field of it behind."""
    key = saved(a=1, cart=BIG)
    session = loaded(key)
    del session["cart"]
    session.save()
    assert set(data_fields(r, key)) == {b"a"}


# -- unreadable large values ----------------------------------------------------------
def corrupt_session(r):
    key = saved(**EXPECTED)
    r.hset(redis_key_of(key), b"\x03cart", b"garbage, not zlib")
    return key


def assert_discard_logged(caplog, key):
    records = [rec for rec in caplog.records if "unreadable session" in rec.getMessage()]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert storage_id(key) in records[0].getMessage()
    assert key not in records[0].getMessage()


def assert_restarted_under_new_key(r, old_key, new_key):
    """The save after a discard created a new session holding only what came after."""
    assert new_key is not None
    assert new_key != old_key
    assert data_fields(r, new_key) == {b"b": b"2"}
    assert b"b" not in data_fields(r, old_key)


def _raises_key_error(session):
    with pytest.raises(KeyError):
        session["cart"]
    return True


READS = {
    "get": lambda s: s.get("cart", "dflt") == "dflt",
    "[]": _raises_key_error,
    "pop": lambda s: s.pop("cart", "dflt") == "dflt",
    "items": lambda s: dict(s.items()) == {},
    "values": lambda s: list(s.values()) == [],
}


@pytest.mark.parametrize("read", READS)
def test_unreadable_large_value_empties_session_and_saves_under_new_key(read, r, caplog):
    """Reading an undecodable large value logs the storage id, empties the session, and
    the next save creates a new session key."""
    key = corrupt_session(r)
    session = loaded(key)
    with caplog.at_level(logging.WARNING, logger="elastic_sessions"):
        assert READS[read](session)
    assert_discard_logged(caplog, key)
    assert dict(session.items()) == {}
    assert raw_data(session).pending_values() == 0
    session["b"] = 2
    session.save()
    assert_restarted_under_new_key(r, key, session.session_key)


AREADS = {
    "aget": lambda s: s.aget("cart", "dflt"),
    "apop": lambda s: s.apop("cart", "dflt"),
}


@pytest.mark.parametrize("read", AREADS)
async def test_async_unreadable_large_value_empties_session(read, r, caplog):
    """The async reads discard an undecodable session the same way; asave starts anew."""
    key = corrupt_session(r)
    session = SessionStore(key)
    with caplog.at_level(logging.WARNING, logger="elastic_sessions"):
        assert await AREADS[read](session) == "dflt"
    assert_discard_logged(caplog, key)
    assert dict(await session.aitems()) == {}
    await session.aset("b", 2)
    await session.asave()
    assert_restarted_under_new_key(r, key, session.session_key)


async def test_async_aitems_of_unreadable_value_is_empty(r, caplog):
    """aitems on a session with an undecodable large value gives an empty session."""
    key = corrupt_session(r)
    with caplog.at_level(logging.WARNING, logger="elastic_sessions"):
        assert dict(await SessionStore(key).aitems()) == {}
    assert_discard_logged(caplog, key)


def test_setdefault_on_unreadable_value_gives_the_default(r):
    """setdefault of an undecodable large value gives the default, never a KeyError."""
    session = loaded(corrupt_session(r))
    assert session.setdefault("cart", []) == []


async def test_async_setdefault_on_unreadable_value_gives_the_default(r):
    """asetdefault of an undecodable large value gives the default, never a KeyError."""
    session = SessionStore(corrupt_session(r))
    assert await session.asetdefault("cart", []) == []


def test_cycle_key_after_unreadable_value_signals_one_creation(r):
    """cycle_key after a discard creates one new session and sends session_created once."""
    key = corrupt_session(r)
    session = loaded(key)
    assert session.get("cart") is None
    created = []

    def receiver(**kwargs):
        created.append(kwargs["storage_id"])

    session_created.connect(receiver)
    try:
        session.cycle_key()
    finally:
        session_created.disconnect(receiver)
    assert session.session_key not in (None, key)
    assert created == [storage_id(session.session_key)]


@pytest.mark.parametrize("prefix", ["", "/async"])
def test_unreadable_large_value_over_http_is_not_a_500(prefix, r, caplog):
    """Over HTTP an undecodable large value reads as missing and a new cookie is issued."""
    key = corrupt_session(r)
    cookie = django_settings.SESSION_COOKIE_NAME
    client = Client(raise_request_exception=False)
    client.cookies[cookie] = key
    with caplog.at_level(logging.WARNING, logger="elastic_sessions"):
        response = client.get(f"{prefix}/read-set/cart/b/2/")
    assert response.status_code == 200
    assert response.json() == {"read": None}
    new_key = response.cookies[cookie].value
    assert new_key != key
    assert_discard_logged(caplog, key)
    assert client.get("/get/b/").json() == {"value": "2"}
    assert client.get("/get/a/").json() == {"value": None}


async def test_unreadable_large_value_over_async_client(r):
    """The async test client sees the same: a 200 and a new session cookie."""
    key = corrupt_session(r)
    cookie = django_settings.SESSION_COOKIE_NAME
    client = AsyncClient(raise_request_exception=False)
    client.cookies[cookie] = key
    response = await client.get("/async/read-set/cart/b/2/")
    assert response.status_code == 200
    assert response.cookies[cookie].value not in ("", key)
    assert (await client.get("/async/get/b/")).json() == {"value": "2"}


# -- memory -------------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_session_hash_uses_no_more_memory_than_one_json_string(size, r):
    """MEMORY USAGE of a session hash is at most that of its data as one JSON string."""
    data = build(size)
    session = SessionStore()
    session.update(data)
    session.save()
    rkey = redis_key_of(session.session_key)
    blob_key = "j" * len(rkey)
    r.set(blob_key, json.dumps(data, separators=(",", ":")), ex=1209600)
    assert r.memory_usage(rkey, samples=0) <= r.memory_usage(blob_key, samples=0)
    # And after the benchmark's load + change + save cycle.
    session = SessionStore(session.session_key)
    session["visits"] = session["visits"] + 1
    session.save()
    data["visits"] += 1
    r.set(blob_key, json.dumps(data, separators=(",", ":")), ex=1209600)
    assert r.memory_usage(rkey, samples=0) <= r.memory_usage(blob_key, samples=0)


# -- the load packet: NOSCRIPT and RESP2 --------------------------------------------------
def age_session(r, key, settings):
    """Lower the TTL as if an hour had passed, so the next load must slide it."""
    r.pexpire(redis_key_of(key), 1000 * (settings.SESSION_COOKIE_AGE - 3600))


def test_scripts_are_reloaded_after_script_flush(r, settings):
    """After SCRIPT FLUSH a load still touches, and a save and a delete still work."""
    with_settings(settings, TOUCH_INTERVAL=60)
    key = saved(**EXPECTED)
    age_session(r, key, settings)
    r.script_flush()
    session = loaded(key)
    assert session.touched_expiry_age is not None
    assert r.ttl(redis_key_of(key)) > settings.SESSION_COOKIE_AGE - 5
    r.script_flush()
    session["b"] = 2
    session.save()
    assert SessionStore(key)["b"] == 2
    r.script_flush()
    SessionStore(key).delete()
    assert r.exists(redis_key_of(key)) == 0


async def test_async_scripts_are_reloaded_after_script_flush(r, settings):
    """The async load and save recover from an emptied script cache too."""
    with_settings(settings, TOUCH_INTERVAL=60)
    key = saved(**EXPECTED)
    age_session(r, key, settings)
    r.script_flush()
    session = SessionStore(key)
    assert await session.aget("a") == 1
    assert session.touched_expiry_age is not None
    assert r.ttl(redis_key_of(key)) > settings.SESSION_COOKIE_AGE - 5
    r.script_flush()
    await session.aset("b", 2)
    await session.asave()
    assert await SessionStore(key).aget("b") == 2
    r.script_flush()
    await SessionStore(key).adelete()
    assert r.exists(redis_key_of(key)) == 0


@pytest.mark.parametrize("protocol", [2, 3])
def test_engine_works_over_either_protocol(protocol, r, settings, elastic_redis):
    """With ?protocol=2 or 3 in REDIS_URL, create, lazy load, touch and save all work."""
    settings.ELASTIC_SESSIONS = {
        "REDIS_URL": f"{elastic_redis.url}?protocol={protocol}",
        "TOUCH_INTERVAL": 60,
    }
    assert int(get_client().client_info()["resp"]) == protocol
    key = saved(**EXPECTED)
    age_session(r, key, settings)
    session = loaded(key)
    assert session.touched_expiry_age is not None
    assert is_encoded(raw_data(session), "cart")
    assert session["cart"] == BIG
    session["b"] = 2
    session.save()
    assert dict(SessionStore(key).items()) == {**EXPECTED, "b": 2}
    session.cycle_key()
    assert dict(SessionStore(session.session_key).items()) == {**EXPECTED, "b": 2}


@pytest.mark.parametrize("protocol", [2, 3])
async def test_async_engine_works_over_either_protocol(protocol, r, settings, elastic_redis):
    """The async client honours ?protocol= too, and the engine works over it."""
    settings.ELASTIC_SESSIONS = {
        "REDIS_URL": f"{elastic_redis.url}?protocol={protocol}",
        "TOUCH_INTERVAL": 60,
    }
    assert int((await get_async_client().client_info())["resp"]) == protocol
    session = SessionStore()
    await session.aupdate(EXPECTED)
    await session.asave()
    key = session.session_key
    age_session(r, key, settings)
    session = SessionStore(key)
    assert await session.aget("cart") == BIG
    assert session.touched_expiry_age is not None
    await session.aset("b", 2)
    await session.asave()
    assert dict(await SessionStore(key).aitems()) == {**EXPECTED, "b": 2}


# -- touch throttle ---------------------------------------------------------------------
@pytest.mark.parametrize("left_ms, slides", [(4000, True), (8000, False)])
def test_short_idle_timeout_slides_despite_long_touch_interval(left_ms, slides, r, settings):
    """With set_expiry(10) and TOUCH_INTERVAL 60 the throttle is 5 s: a load 6 s in
    slides the expiry back to 10 s, a load 2 s in leaves it."""
    with_settings(settings, TOUCH_INTERVAL=60)
    session = SessionStore()
    session.set_expiry(10)
    session["a"] = 1
    session.save()
    rkey = redis_key_of(session.session_key)
    assert stored_meta(r, session.session_key)[2] == 10
    r.pexpire(rkey, left_ms)  # as if 10 - left_ms / 1000 seconds had passed
    reloaded = loaded(session.session_key)
    if slides:
        assert r.pttl(rkey) > 9000
        assert reloaded.touched_expiry_age in (9, 10)
    else:
        assert r.pttl(rkey) <= left_ms
        assert reloaded.touched_expiry_age is None


async def test_async_short_idle_timeout_slides_despite_long_touch_interval(r, settings):
    """The async load applies the same half-idle throttle."""
    with_settings(settings, TOUCH_INTERVAL=60)
    session = SessionStore()
    await session.aset_expiry(10)
    await session.aset("a", 1)
    await session.asave()
    rkey = redis_key_of(session.session_key)
    r.pexpire(rkey, 4000)
    reloaded = SessionStore(session.session_key)
    assert await reloaded.aget("a") == 1
    assert r.pttl(rkey) > 9000
    assert reloaded.touched_expiry_age in (9, 10)


# -- cycle_key and the absolute deadline ------------------------------------------------
def backdate(r, key, seconds_left):
    """Rewrite a session's metadata: created long ago, deadline ``seconds_left`` away."""
    now = int(time.time())
    _, _, idle = stored_meta(r, key)
    created, deadline = now - 10_000, now + seconds_left
    r.hset(redis_key_of(key), META_FIELD, struct.pack(">III", created, deadline, idle))
    return created, deadline


def test_cycle_key_keeps_created_and_deadline(r):
    """cycle_key moves the data to a new key with the old created time and deadline."""
    key = saved(**EXPECTED)
    created, deadline = backdate(r, key, 500)
    session = loaded(key)
    session.cycle_key()
    new_key = session.session_key
    assert new_key not in (None, key)
    assert r.exists(redis_key_of(key)) == 0
    assert stored_meta(r, new_key)[:2] == (created, deadline)
    assert 0 < r.ttl(redis_key_of(new_key)) <= 500
    assert b"\x03cart" in data_fields(r, new_key)
    assert dict(SessionStore(new_key).items()) == EXPECTED
    assert session.get_expiry_age() <= 500
    assert session.get_expiry_date() <= timezone.now() + timedelta(seconds=501)


async def test_async_cycle_key_keeps_created_and_deadline(r):
    """acycle_key carries the created time and deadline over too."""
    key = saved(**EXPECTED)
    created, deadline = backdate(r, key, 500)
    session = SessionStore(key)
    assert await session.aget("a") == 1
    await session.acycle_key()
    new_key = session.session_key
    assert new_key not in (None, key)
    assert stored_meta(r, new_key)[:2] == (created, deadline)
    assert 0 < r.ttl(redis_key_of(new_key)) <= 500
    assert dict(await SessionStore(new_key).aitems()) == EXPECTED


def test_flush_then_new_session_gets_a_fresh_deadline(r, settings):
    """After flush (logout) the next session starts its own absolute deadline."""
    with_settings(settings, ABSOLUTE_TIMEOUT=5000)
    key = saved(**EXPECTED)
    backdate(r, key, 500)
    session = loaded(key)
    session.flush()
    session["b"] = 2
    session.save()
    now = int(time.time())
    created, deadline, _ = stored_meta(r, session.session_key)
    assert now - 5 <= created <= now
    assert deadline == created + 5000
    assert r.ttl(redis_key_of(session.session_key)) > 4000
    assert session.get_expiry_age() > 4000


async def test_async_flush_then_new_session_gets_a_fresh_deadline(r, settings):
    """After aflush the next asave starts a new absolute deadline."""
    with_settings(settings, ABSOLUTE_TIMEOUT=5000)
    key = saved(**EXPECTED)
    backdate(r, key, 500)
    session = SessionStore(key)
    assert await session.aget("a") == 1
    await session.aflush()
    await session.aset("b", 2)
    await session.asave()
    created, deadline, _ = stored_meta(r, session.session_key)
    assert deadline == created + 5000
    assert await session.aget_expiry_age() > 4000


def test_logout_over_http_then_new_session_gets_a_fresh_deadline(r, settings, db):
    """Logging out and starting again over HTTP gives the new session a new deadline."""
    with_settings(settings, ABSOLUTE_TIMEOUT=5000)
    client = Client()
    client.get("/login/alice/")
    cookie = django_settings.SESSION_COOKIE_NAME
    first_key = client.cookies[cookie].value
    backdate(r, first_key, 500)
    client.get("/logout/")
    client.get("/set/b/2/")
    second_key = client.cookies[cookie].value
    assert second_key not in ("", first_key)
    created, deadline, _ = stored_meta(r, second_key)
    assert deadline == created + 5000


def test_expiry_date_is_capped_by_absolute_deadline(settings):
    """get_expiry_date never lies past the absolute deadline (ABSOLUTE_TIMEOUT 100 s)."""
    with_settings(settings, ABSOLUTE_TIMEOUT=100)
    settings.SESSION_COOKIE_AGE = 3600
    key = saved(a=1)
    for session in (SessionStore(key), loaded(key)):
        session.get("a")
        date = session.get_expiry_date()
        now = timezone.now()
        assert now + timedelta(seconds=90) <= date <= now + timedelta(seconds=101)
        assert 90 <= session.get_expiry_age() <= 100
    session = loaded(key)
    session.set_expiry(timezone.now() + timedelta(days=1))
    assert session.get_expiry_date() <= timezone.now() + timedelta(seconds=101)


async def test_async_expiry_date_is_capped_by_absolute_deadline(settings):
    """aget_expiry_date is capped by the absolute deadline like aget_expiry_age."""
    with_settings(settings, ABSOLUTE_TIMEOUT=100)
    settings.SESSION_COOKIE_AGE = 3600
    session = SessionStore()
    await session.aset("a", 1)
    await session.asave()
    for current in (session, SessionStore(session.session_key)):
        await current.aget("a")
        date = await current.aget_expiry_date()
        now = timezone.now()
        assert now + timedelta(seconds=90) <= date <= now + timedelta(seconds=101)
        assert 90 <= await current.aget_expiry_age() <= 100
