"""How one session's items become Redis hash fields, and back.

Each top-level session key is its own hash field, so a save can write only the
keys that changed.  Values go through ``SESSION_SERIALIZER``, with one exception:
under Django's JSON serializer a ``str`` is stored as raw UTF-8 under a marked
field name.  That saves the quotes and escapes, and it keeps a 64-character
value such as ``_auth_user_hash`` within Redis' 64-byte listpack limit
(``hash-max-listpack-value``): one longer value turns the whole hash into the
far larger hashtable encoding.

Field names:

* ``\\x00``: the metadata field (created, absolute deadline, idle seconds).
* ``\\x01`` + key: a raw UTF-8 string value.
* ``\\x02`` + key: a serialized value whose key itself starts with ``\\x00``-``\\x02``.
* key: a serialized value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from django.core.signing import JSONSerializer

from .exceptions import CorruptSessionData

META_FIELD = b"\x00"
RAW_STR_MARK = b"\x01"
ESCAPE_MARK = b"\x02"


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
        return b"%d,%d,%d" % (self.created, self.deadline, self.idle)

    @classmethod
    def decode(cls, raw: bytes) -> SessionMeta:
        try:
            created, deadline, idle = (int(part) for part in raw.split(b","))
        except ValueError as err:
            raise CorruptSessionData("unreadable session metadata") from err
        return cls(created, deadline, idle)


def serialized_field(key: str) -> bytes:
    """The field name of ``key`` when its value goes through the serializer."""
    name = key.encode("utf-8", "surrogatepass")
    return ESCAPE_MARK + name if name[:1] <= ESCAPE_MARK and name else name


def key_of_field(field: bytes) -> str:
    """The session key a (non-metadata) field name stores."""
    name = field[1:] if field[:1] in (RAW_STR_MARK, ESCAPE_MARK) else field
    return name.decode("utf-8", "surrogatepass")


def field_variants(key: str) -> tuple[bytes, bytes]:
    """Every field name ``key`` can be stored under (a delete must remove both)."""
    return RAW_STR_MARK + key.encode("utf-8", "surrogatepass"), serialized_field(key)


class Codec:
    """Turns session items into hash fields and back with one serializer."""

    def __init__(self, serializer_class: type[Serializer]) -> None:
        self.serializer = serializer_class()
        # A custom serializer may give strings a meaning of their own (signing,
        # compression), so only Django's plain JSON gets the raw-string form.
        self.raw_strings = serializer_class is JSONSerializer

    def encode_item(self, key: str, value: object) -> tuple[bytes, bytes]:
        if not isinstance(key, str):
            raise TypeError(f"Session keys must be str, not {type(key).__name__}: {key!r}.")
        if self.raw_strings and isinstance(value, str):
            return (
                RAW_STR_MARK + key.encode("utf-8", "surrogatepass"),
                value.encode("utf-8", "surrogatepass"),
            )
        return serialized_field(key), self.serializer.dumps(value)

    def encode_session(self, data: dict[str, Any]) -> dict[bytes, bytes]:
        return dict(self.encode_item(key, value) for key, value in data.items())

    def decode_item(self, field: bytes, value: bytes) -> tuple[str, Any]:
        try:
            if field[:1] == RAW_STR_MARK:
                return (
                    field[1:].decode("utf-8", "surrogatepass"),
                    value.decode("utf-8", "surrogatepass"),
                )
            name = field[1:] if field[:1] == ESCAPE_MARK else field
            return name.decode("utf-8", "surrogatepass"), self.serializer.loads(value)
        except Exception as err:
            # Serializers raise whatever their format raises (ValueError,
            # UnicodeError, binascii.Error...): all of it means "not ours".
            raise CorruptSessionData("undecodable session value") from err

    def decode_fields(
        self, fields: dict[bytes, bytes]
    ) -> tuple[dict[str, Any], dict[bytes, bytes], SessionMeta | None]:
        """Session data, the data fields as stored, and the metadata (if any)."""
        data: dict[str, Any] = {}
        stored: dict[bytes, bytes] = {}
        meta: SessionMeta | None = None
        for field, value in fields.items():
            if field == META_FIELD:
                meta = SessionMeta.decode(value)
                continue
            key, decoded = self.decode_item(field, value)
            data[key] = decoded
            stored[field] = value
        return data, stored, meta
