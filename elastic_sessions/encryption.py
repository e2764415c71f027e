"""Encryption at rest of stored session values: AES-256-GCM, with key rotation.

With ``ENCRYPTION_KEYS`` set, each session value is stored under the field name
``\\x08`` + key (see codec.py) as::

    version (1 byte) | key id (4) | nonce (12) | AES-GCM(mark byte + value) with its tag

where the mark byte says which form the value had in the clear (raw string,
compressed, serialized).  The associated data binds the value to its session's
storage id and its field name, so a value copied into another session, or under
another key of the same session, fails to decrypt.  The first key encrypts; all
decrypt, found by key id (no trial decryption).

Two things stay in the clear on purpose: Django's ``_auth_user_id`` (the Lua
scripts compare it atomically to refuse revoking another user's session; the
hybrid database holds it as a column anyway) and the package's own metadata
(times, the client field).  Engines work on values in the clear: fields are
opened right after a load and sealed right before a write, so change detection
compares values, not ciphertexts that differ on every write.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.contrib.auth import SESSION_KEY as USER_ID_KEY

from .codec import (
    COMPRESSED_MARK,
    ENCRYPTED_MARK,
    RAW_STR_MARK,
    field_variants,
    key_bytes_of_field,
    serialized_field,
)
from .conf import elastic_settings

# Tampering is a security event: django.security.* (Django's own convention).
security_logger = logging.getLogger("django.security.SuspiciousSession")

_VERSION = b"\x01"
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12
_HEADER = len(_VERSION) + _KEY_ID_BYTES + _NONCE_BYTES
# The clear form inside the ciphertext: which field name the value had.
_FORM_SERIALIZED = b"\x00"
_FORMS = {RAW_STR_MARK: RAW_STR_MARK, COMPRESSED_MARK: COMPRESSED_MARK}
# Never encrypted (see the module docstring).
CLEAR_FIELDS = frozenset(field_variants(USER_ID_KEY))


class UnreadableValue(Exception):
    """A sealed value that no configured key opens: tampered, swapped or keyless."""


@dataclass(frozen=True)
class _Key:
    key_id: bytes
    aead: AESGCM


@dataclass(frozen=True)
class Keyring:
    """The configured keys: the first seals (None: nothing is sealed), any opens."""

    primary: _Key | None
    by_id: dict[bytes, _Key] = field(default_factory=dict)

    @property
    def sealing(self) -> bool:
        return self.primary is not None

    def seal(self, sid: str, name: bytes, value: bytes) -> tuple[bytes, bytes]:
        """``(sealed name, sealed value)`` for the clear field ``name`` = ``value``."""
        key = self.primary
        assert key is not None  # callers check `sealing`
        sealed_name = ENCRYPTED_MARK + key_bytes_of_field(name)
        form = _FORMS.get(name[:1], _FORM_SERIALIZED)
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = key.aead.encrypt(nonce, form + value, _associated(sid, sealed_name))
        return sealed_name, _VERSION + key.key_id + nonce + ciphertext

    def open(self, sid: str, sealed_name: bytes, value: bytes) -> tuple[bytes, bytes, bool]:
        """``(clear name, clear value, stale)``; stale: sealed with a key other than
        the first, so the next write seals it again.  Raises ``UnreadableValue``."""
        if len(value) < _HEADER + 16 or value[:1] != _VERSION:
            raise UnreadableValue("not a sealed value of a known version")
        key_id = value[1 : 1 + _KEY_ID_BYTES]
        key = self.by_id.get(key_id)
        if key is None:
            raise UnreadableValue("sealed with a key that is not configured")
        nonce = value[1 + _KEY_ID_BYTES : _HEADER]
        try:
            clear = key.aead.decrypt(nonce, value[_HEADER:], _associated(sid, sealed_name))
        except InvalidTag as err:
            raise UnreadableValue("authentication failed") from err
        form, raw = clear[:1], clear[1:]
        key_name = sealed_name[1:]
        if form == _FORM_SERIALIZED:
            name = serialized_field(key_name.decode("utf-8", "surrogatepass"))
        elif form in _FORMS:
            name = form + key_name
        else:
            raise UnreadableValue("unknown form")
        return name, raw, key is not self.primary


def _associated(sid: str, sealed_name: bytes) -> bytes:
    # Binds a value to its session and its key: swapped values fail to open.
    return b"elastic_sessions.v1\x00" + sid.encode("ascii") + b"\x00" + sealed_name


def _derive(secret: str) -> _Key:
    material = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"elastic_sessions.encryption.v1",
    ).derive(secret.encode("utf-8"))
    key_id = hashlib.sha256(b"elastic_sessions.key-id\x00" + material).digest()[:_KEY_ID_BYTES]
    return _Key(key_id, AESGCM(material))


@lru_cache(maxsize=4)
def _keyring(secrets: tuple[str | None, ...]) -> Keyring:
    keys = [None if secret is None else _derive(secret) for secret in secrets]
    by_id: dict[bytes, _Key] = {}
    for key in keys:
        if key is not None:
            by_id.setdefault(key.key_id, key)  # the earlier entry wins a (2^-32) id clash
    return Keyring(keys[0] if keys else None, by_id)


def keyring() -> Keyring:
    """The keys of ``ENCRYPTION_KEYS`` (an empty keyring when unset)."""
    return _keyring(elastic_settings.ENCRYPTION_KEYS)


@dataclass(frozen=True, slots=True)
class OpenedFields:
    """A session's fields in the clear, and which of them to seal again on write."""

    fields: dict[bytes, bytes]
    stale: frozenset[bytes]
    unreadable: int


def open_fields(sid: str, fields: dict[bytes, bytes]) -> OpenedFields:
    """The fields of a loaded session in the clear.

    A sealed value that cannot be opened is dropped (the key reads as absent)
    and logged as a security event, never raised.  With keys configured, clear
    values (from before encryption was turned on) and values sealed with an
    older key are *stale*: the next write seals them with the first key.
    """
    ring = keyring()
    sealing = ring.sealing
    if not ring.by_id and not any(name[:1] == ENCRYPTED_MARK for name in fields):
        return OpenedFields(fields, frozenset(), 0)
    clear: dict[bytes, bytes] = {}
    stale: set[bytes] = set()
    unreadable = 0
    for name, value in fields.items():
        if name[:1] != ENCRYPTED_MARK:
            clear[name] = value
            if sealing and name not in CLEAR_FIELDS:
                stale.add(name)
            continue
        try:
            clear_name, raw, old_key = ring.open(sid, name, value)
        except UnreadableValue as err:
            unreadable += 1
            security_logger.warning(
                "Dropped an encrypted value of session %s that cannot be decrypted (%s); "
                "the request continues without it.",
                sid,
                err,
            )
            continue
        clear[clear_name] = raw
        if old_key or not sealing:
            stale.add(clear_name)
    return OpenedFields(clear, frozenset(stale), unreadable)


def seal_fields(sid: str, sets: dict[bytes, bytes]) -> tuple[dict[bytes, bytes], list[bytes]]:
    """``sets`` as stored: sealed when keys are configured (except CLEAR_FIELDS),
    and the clear names they replace (for the write to delete)."""
    ring = keyring()
    if not ring.sealing:
        return sets, []
    sealed: dict[bytes, bytes] = {}
    replaced: list[bytes] = []
    for name, value in sets.items():
        if name in CLEAR_FIELDS:
            sealed[name] = value
            continue
        sealed_name, sealed_value = ring.seal(sid, name, value)
        sealed[sealed_name] = sealed_value
        replaced.append(name)
    return sealed, replaced


def sealed_names(names: Iterable[bytes]) -> set[bytes]:
    return {ENCRYPTED_MARK + key_bytes_of_field(name) for name in names}
