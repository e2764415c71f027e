"""Django session engines on Redis with delta saves, sliding expiry and per-user indexes."""

from __future__ import annotations

from .exceptions import (
    CorruptSessionData,
    ElasticSessionsError,
    SessionLimitExceeded,
    SessionStoreUnavailable,
    SuspiciousSessionKey,
)

__all__ = [
    "CorruptSessionData",
    "ElasticSessionsError",
    "SessionLimitExceeded",
    "SessionStoreUnavailable",
    "SuspiciousSessionKey",
]
