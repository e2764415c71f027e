"""A session's items that decode a large stored value only when it is read.

A request usually reads a few small keys (the user id, a CSRF token) of a session
that may also hold a large cart or a form wizard.  Decoding (and decompressing)
those on every load would cost more than the round trip, so large values stay
as :class:`~elastic_sessions.codec.Encoded` until someone reads them.  A value
never read is also never re-encoded by a save: it cannot have changed.

``SessionData`` is a real ``dict`` (``isinstance`` checks and fast key lookups
keep working); every method that hands out values decodes first.  A value that
turns out undecodable empties the session, as an undecodable load would: the
request goes on with a new, empty session and a warning names the storage id.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from .codec import (
    COMPRESSED_MARK,
    RAW_STR_MARK,
    Codec,
    Encoded,
    key_of_field,
)
from .exceptions import CorruptSessionData

logger = logging.getLogger("elastic_sessions.backends.base")

_MISSING: Any = object()

# Values of these types cannot be changed in place: while a key still holds the
# very object the load produced, a save need not encode it to compare.
_IMMUTABLE = frozenset({str, int, float, bool, type(None)})

# Serialized values up to this size are decoded with the load: cheaper than
# wrapping them, and a corrupt small value is caught before the view runs.
EAGER_DECODE_MAX = 64


def session_data_from_fields(fields: dict[bytes, bytes], codec: Codec, label: str) -> SessionData:
    """The session items of a hash's data fields (the metadata field taken out).

    Raises ``CorruptSessionData`` when a field name or a small value is unreadable.
    """
    items: dict[str, Any] = {}
    loaded: dict[str, Any] = {}
    pending = 0
    decode_value = codec.decode_value
    for field, raw in fields.items():
        try:
            key = key_of_field(field)
        except UnicodeDecodeError as err:
            raise CorruptSessionData("undecodable session field name") from err
        mark = field[:1]
        if mark == RAW_STR_MARK:
            try:
                value = items[key] = loaded[key] = raw.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError as err:
                raise CorruptSessionData("undecodable session value") from err
        elif len(raw) <= EAGER_DECODE_MAX and mark != COMPRESSED_MARK:
            value = items[key] = decode_value(field, raw)
            if type(value) in _IMMUTABLE:
                loaded[key] = value
        else:
            items[key] = Encoded(field, raw)
            pending += 1
    data = SessionData(items, codec, label, pending)
    data.loaded_immutables = loaded
    return data


class SessionData(dict[str, Any]):
    """Session items; values of type ``Encoded`` are decoded on first access."""

    __slots__ = ("_codec", "_label", "_pending", "corruption", "loaded_immutables")

    def __init__(self, items: dict[str, Any], codec: Codec, label: str, pending: int) -> None:
        super().__init__(items)
        self._codec = codec
        # Names the session in the log line (the storage id, never the cookie).
        self._label = label
        # How many values are still Encoded (0: behave exactly like a dict).
        self._pending = pending
        self.corruption: CorruptSessionData | None = None
        # Immutable values as loaded (see _IMMUTABLE); the engine's save reads it.
        self.loaded_immutables: dict[str, Any] = {}

    # -- decoding -------------------------------------------------------------
    def _decoded(self, key: str, value: Encoded) -> Any:
        try:
            decoded = self._codec.decode_value(value.field, value.raw)
        except CorruptSessionData as err:
            self._discard(err)
            raise KeyError(key) from None
        dict.__setitem__(self, key, decoded)
        self._pending -= 1
        return decoded

    def _discard(self, err: CorruptSessionData) -> None:
        logger.warning(
            "Discarded unreadable session %s (%s); the request continues with a new, "
            "empty session.",
            self._label,
            err,
        )
        self.corruption = err
        self._pending = 0
        dict.clear(self)

    def decode_all(self) -> None:
        if not self._pending:
            return
        for key, value in list(dict.items(self)):
            if type(value) is Encoded:
                try:
                    self._decoded(key, value)
                except KeyError:
                    return

    # -- single values ----------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        value = dict.__getitem__(self, key)
        if type(value) is Encoded:
            return self._decoded(key, value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = dict.get(self, key, _MISSING)
        if value is _MISSING:
            return default
        if type(value) is Encoded:
            try:
                return self._decoded(key, value)
            except KeyError:
                return default
        return value

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        value = dict.get(self, key, _MISSING)
        if type(value) is Encoded:
            with contextlib.suppress(KeyError):
                self._decoded(key, value)
        if default is _MISSING:
            return dict.pop(self, key)
        return dict.pop(self, key, default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key in self:
            try:
                return self[key]
            except KeyError:
                pass
        return dict.setdefault(self, key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        if type(dict.get(self, key)) is Encoded:
            self._pending -= 1
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        if type(dict.get(self, key)) is Encoded:
            self._pending -= 1
        dict.__delitem__(self, key)

    # -- everything that hands out many values decodes them all first ---------
    def __iter__(self) -> Iterator[str]:
        # Overriding __iter__ makes dict(x), {**x} and x | y go through
        # keys() and __getitem__ instead of copying Encoded values out.
        return dict.__iter__(self)

    def values(self) -> Any:
        self.decode_all()
        return dict.values(self)

    def items(self) -> Any:
        self.decode_all()
        return dict.items(self)

    def popitem(self) -> tuple[str, Any]:
        self.decode_all()
        return dict.popitem(self)

    def copy(self) -> dict[str, Any]:
        self.decode_all()
        return dict(dict.items(self))

    def update(self, *args: Any, **kwargs: Any) -> None:
        incoming = dict(*args, **kwargs)
        for key in incoming:
            if type(dict.get(self, key)) is Encoded:
                self._pending -= 1
        dict.update(self, incoming)

    def clear(self) -> None:
        self._pending = 0
        dict.clear(self)

    def __eq__(self, other: object) -> bool:
        self.decode_all()
        if isinstance(other, SessionData):
            other.decode_all()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None

    def __or__(self, other: Any) -> Any:
        self.decode_all()
        return dict.__or__(dict(dict.items(self)), other)

    def __ror__(self, other: Any) -> Any:
        self.decode_all()
        return dict.__or__(dict(other), dict(dict.items(self)))

    def __repr__(self) -> str:
        self.decode_all()
        return dict.__repr__(self)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles (and copies) as the plain dict it stands for.
        self.decode_all()
        return (dict, (dict(dict.items(self)),))

    def pending_values(self) -> int:
        return self._pending
