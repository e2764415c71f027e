"""How one session's items become Redis hash fields, and back.

Each top-level session key is its own hash field, so a save can write only the
keys that changed.  Values go through ``SESSION_SERIALIZER``, with two twists
that keep Redis memory at or below the same data stored as one JSON string:

* under Django's JSON serializer a short ``str`` is stored as raw UTF-8.  That
  saves the quotes and escapes, and it keeps a 64-character value such as
  ``_auth_user_hash`` within Redis' 64-byte listpack limit
  (``hash-max-listpack-value``): one longer value turns the whole hash into the
  far larger hashtable encoding;
* a serialized value of ``COMPRESS_MIN_BYTES`` or more is stored zlib-compressed
  when that saves at least an eighth of it.  Such values are large by
  definition, so the hash has left the listpack encoding anyway; compression
  more than pays for the hashtable's per-field overhead.

Field names:

* ``\\x00``: the metadata field (created, absolute deadline, idle seconds).
* ``\\x01`` + key: a raw UTF-8 string value.
* ``\\x03`` + key: a zlib-compressed serialized value.
* ``\\x02`` + key: a serialized value whose key itself starts with ``\\x00``-``\\x07``.
* ``\\x04``, ``\\x05``: the hybrid engine's version and durable expiry (its Redis copy only).
* ``\\x06``: the hybrid's pending mark; ``\\x07``: the client field (see client.py).
* ``\\x08`` + key: an encrypted value (see encryption.py), whatever its form inside.
* key: a serialized value.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Protocol

from django.core.signing import JSONSerializer

from .conf import elastic_settings
from .exceptions import CorruptSessionData

META_FIELD = b"\x00"
RAW_STR_MARK = b"\x01"
ESCAPE_MARK = b"\x02"
COMPRESSED_MARK = b"\x03"
ENCRYPTED_MARK = b"\x08"
_MARKS = (RAW_STR_MARK, ESCAPE_MARK, COMPRESSED_MARK, ENCRYPTED_MARK)
# Field names starting with a byte up to this one are the package's own (the
# metadata, marks, the hybrid engine's fields \x04 to \x06, the client field
# and the encrypted mark); a session key that starts so is stored escaped.
_LAST_RESERVED = b"\x08"
_META_FORMAT = struct.Struct(">III")
# Level 1: most of the size win of zlib's default for a fraction of its time.
_ZLIB_LEVEL = 1


class Serializer(Protocol):
    """What Django asks of a ``SESSION_SERIALIZER`` class's instances."""

    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


@dataclass(frozen=True, slots=True)
class SessionMeta:
    """Times of one session, in whole epoch seconds (idle in seconds; 0: fixed)."""

    created: int
    deadline: int
    idle: int

    def encode(self) -> bytes:
        return _META_FORMAT.pack(self.created, self.deadline, self.idle)

    @classmethod
    def decode(cls, raw: bytes) -> SessionMeta:
        try:
            created, deadline, idle = _META_FORMAT.unpack(raw)
        except struct.error as err:
            raise CorruptSessionData("unreadable session metadata") from err
        return cls(created, deadline, idle)


class _CompactJSON:
    """Byte-for-byte what ``django.core.signing.JSONSerializer`` writes and reads."""

    _dumps = staticmethod(json.JSONEncoder(separators=(",", ":")).encode)
    _loads = staticmethod(json.loads)

    def dumps(self, obj: Any) -> bytes:
        return self._dumps(obj).encode("ascii")

    def loads(self, data: bytes) -> Any:
        if data.isdigit() and (data[0] != 0x30 or len(data) == 1):  # ints: counters, ids
            return int(data)
        return self._loads(data)


class Encoded:
    """A stored value not decoded yet: its field name and bytes as read."""

    __slots__ = ("field", "raw")

    def __init__(self, field: bytes, raw: bytes) -> None:
        self.field = field
        self.raw = raw

    def __repr__(self) -> str:
        return f"<Encoded {self.field!r}: {len(self.raw)} bytes>"


def _name(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


def serialized_field(key: str) -> bytes:
    """The field name of ``key`` when its value goes through the serializer."""
    name = _name(key)
    return ESCAPE_MARK + name if name and name[:1] <= _LAST_RESERVED else name


def key_bytes_of_field(field: bytes) -> bytes:
    """The session key a field name stores, still encoded (no decoding to fail)."""
    return field[1:] if field[:1] in _MARKS else field


# Field names repeat across requests (the same few keys in every session), so
# their decoded keys are remembered; bounded, as names come from stored data.
_KEYS_OF_FIELDS: dict[bytes, str] = {}
_KEYS_OF_FIELDS_MAX = 4096


def key_of_field(field: bytes) -> str:
    """The session key a (non-metadata) field name stores."""
    key = _KEYS_OF_FIELDS.get(field)
    if key is None:
        name = field[1:] if field[:1] in _MARKS else field
        key = name.decode("utf-8", "surrogatepass")
        if len(_KEYS_OF_FIELDS) < _KEYS_OF_FIELDS_MAX:
            _KEYS_OF_FIELDS[field] = key
    return key


_VARIANTS: dict[str, tuple[bytes, ...]] = {}


def field_variants(key: str) -> tuple[bytes, ...]:
    """Every field name ``key`` can be stored under (a delete must remove all)."""
    variants = _VARIANTS.get(key)
    if variants is None:
        name = _name(key)
        variants = (
            RAW_STR_MARK + name,
            COMPRESSED_MARK + name,
            serialized_field(key),
            ENCRYPTED_MARK + name,
        )
        if len(_VARIANTS) < _KEYS_OF_FIELDS_MAX:
            _VARIANTS[key] = variants
    return variants


class Codec:
    """Turns session items into hash fields and back with one serializer."""

    def __init__(self, serializer_class: type[Serializer], compress_min_bytes: int) -> None:
        self.serializer: Serializer = serializer_class()
        # A custom serializer may give strings a meaning of their own (signing,
        # compression), so only Django's plain JSON gets the raw-string form.
        self.raw_strings = serializer_class is JSONSerializer
        if self.raw_strings:
            # Django's JSONSerializer, minus its latin-1 round trip and a call
            # layer: the very same bytes (ASCII-only compact JSON) both ways.
            self.serializer = _CompactJSON()
        # 0 turns compression off.
        self.compress_min = compress_min_bytes or -1

    def encode_item(self, key: str, value: object) -> tuple[bytes, bytes]:
        if not isinstance(key, str):
            raise TypeError(f"Session keys must be str, not {type(key).__name__}: {key!r}.")
        compress_min = self.compress_min
        if self.raw_strings and type(value) is str:
            raw = value.encode("utf-8", "surrogatepass")
            if len(raw) < compress_min or compress_min < 0:
                return RAW_STR_MARK + _name(key), raw
        serialized = self.serializer.dumps(value)
        if 0 <= compress_min <= len(serialized):
            packed = zlib.compress(serialized, _ZLIB_LEVEL)
            if len(packed) <= len(serialized) - (len(serialized) >> 3):
                return COMPRESSED_MARK + _name(key), packed
        if self.raw_strings and type(value) is str:
            return RAW_STR_MARK + _name(key), value.encode("utf-8", "surrogatepass")
        return serialized_field(key), serialized

    def decode_value(self, field: bytes, raw: bytes) -> Any:
        try:
            mark = field[:1]
            if mark == RAW_STR_MARK:
                return raw.decode("utf-8", "surrogatepass")
            if mark == COMPRESSED_MARK:
                return self.serializer.loads(zlib.decompress(raw))
            return self.serializer.loads(raw)
        except Exception as err:
            # Serializers raise whatever their format raises (ValueError,
            # UnicodeError, zlib.error...): all of it means "not ours".
            raise CorruptSessionData("undecodable session value") from err

    def decode_item(self, field: bytes, raw: bytes) -> tuple[str, Any]:
        try:
            key = key_of_field(field)
        except UnicodeDecodeError as err:
            raise CorruptSessionData("undecodable session field name") from err
        return key, self.decode_value(field, raw)


_codecs: dict[tuple[type[Serializer], int], Codec] = {}


def codec_for(serializer_class: type[Serializer]) -> Codec:
    """One shared codec per serializer and compression setting."""
    cache_key = (serializer_class, elastic_settings.COMPRESS_MIN_BYTES)
    codec = _codecs.get(cache_key)
    if codec is None:
        codec = _codecs[cache_key] = Codec(serializer_class, cache_key[1])
    return codec
