"""Storage ids and Redis key names.

A cookie's session key never reaches Redis: it is turned into a *storage id*, a
keyed hash, so a leaked dump or backup yields no usable cookie (the same reason
Rails hashes its session ids, CVE-2019-16782).  Key names put the storage id in a
``{hash tag}`` so every key of one session lands in one Redis Cluster slot.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from typing import NewType

from django.contrib.sessions.backends.base import VALID_KEY_CHARS

from .conf import elastic_settings

StorageId = NewType("StorageId", str)
RedisKey = NewType("RedisKey", str)

# Django issues 32 characters from [a-z0-9]; anything else never came from us.
SESSION_KEY_LENGTH = 32
_VALID_SESSION_KEY = re.compile(rf"[{re.escape(VALID_KEY_CHARS)}]{{{SESSION_KEY_LENGTH}}}")
# 16 bytes of keyed BLAKE2b in unpadded base64url.
_VALID_STORAGE_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def is_valid_session_key(value: object) -> bool:
    """True if ``value`` has the exact shape of a key this package issues."""
    return isinstance(value, str) and _VALID_SESSION_KEY.fullmatch(value) is not None


def is_valid_storage_id(value: object) -> bool:
    """True if ``value`` has the shape of a storage id (for ids from forms and URLs)."""
    return isinstance(value, str) and _VALID_STORAGE_ID.fullmatch(value) is not None


@lru_cache(maxsize=8)
def _derived_key(secret: str, purpose: str) -> bytes:
    # One key per purpose, so a storage id can never be confused with a user hash.
    return hashlib.sha256(f"elastic_sessions.{purpose}:{secret}".encode()).digest()


def _keyed_hash(purpose: str, value: str) -> str:
    key = _derived_key(elastic_settings.STORAGE_ID_SECRET, purpose)
    # Keyed BLAKE2b is a PRF like HMAC-SHA256 (and the same 128-bit output), at a
    # tenth of HMAC's per-call setup cost: this runs on every request.
    digest = hashlib.blake2b(value.encode(), key=key, digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def storage_id(session_key: str) -> StorageId:
    """The storage id of a session key: stable, one-way, secret-keyed."""
    return StorageId(_keyed_hash("storage-id", session_key))


def user_hash(user_id: object) -> str:
    """A fixed-shape name for a user's index, whatever the primary key looks like."""
    return _keyed_hash("user-index", str(user_id))


def session_redis_key(sid: StorageId) -> RedisKey:
    """The Redis hash that holds one session's fields."""
    return RedisKey(f"{elastic_settings.KEY_PREFIX}:{{{sid}}}")


def user_index_redis_key(user_id: object) -> RedisKey:
    """The sorted set of a user's storage ids, scored by their absolute deadline."""
    return RedisKey(f"{elastic_settings.KEY_PREFIX}:u:{{{user_hash(user_id)}}}")


def storage_id_from_redis_key(key: str) -> StorageId | None:
    """The storage id inside a session key name, or None for any other key."""
    prefix = f"{elastic_settings.KEY_PREFIX}:{{"
    if key.startswith(prefix) and key.endswith("}"):
        candidate = key[len(prefix) : -1]
        if is_valid_storage_id(candidate):
            return StorageId(candidate)
    return None


def listing_redis_keys() -> tuple[RedisKey, RedisKey]:
    """The two sorted sets of every session (admin list): by last seen, by expiry.

    One key each, so each lives in one Cluster slot; every command names one.
    """
    prefix = elastic_settings.KEY_PREFIX
    return RedisKey(f"{prefix}:ix:seen"), RedisKey(f"{prefix}:ix:exp")
