"""``SESSION_ENGINE = "elastic_sessions.backends.hybrid"``: Redis first, the database behind.

The same contract and change tracking as the Redis engine (see
:mod:`elastic_sessions.backends.base`); what differs is the storage: the database
holds the durable copy, Redis a copy that is never served once it is known to be
older (see :mod:`elastic_sessions.storage.hybrid`).  Users stay signed in through
a Redis outage, a restart that lost Redis' data, and eviction.
"""

from __future__ import annotations

import time

from asgiref.sync import sync_to_async

from ..storage.hybrid import HybridStorage, database_outages
from .base import ElasticSessionBase, require_app_installed

require_app_installed()

# Ended sessions deleted per statement by clear_expired().
_PURGE_BATCH = 1000


class SessionStore(ElasticSessionBase):
    """Hybrid sessions: served from Redis, durable in the database."""

    storage = HybridStorage()

    @classmethod
    def clear_expired(cls) -> None:
        # Redis expires its copies itself; the database rows are deleted here
        # (Django's clearsessions command calls this).
        with database_outages("delete ended sessions"):
            while cls.storage.db.purge_expired(int(time.time()), _PURGE_BATCH) == _PURGE_BATCH:
                pass

    @classmethod
    async def aclear_expired(cls) -> None:
        await sync_to_async(cls.clear_expired)()
