"""The hybrid engine passes the whole shared contract (SQLite; PostgreSQL in the
database pass)."""

from __future__ import annotations

import time

import pytest

from elastic_sessions.backends.hybrid import SessionStore
from elastic_sessions.keys import storage_id
from elastic_sessions.models import DurableSession

from .contract import SessionContract, redis_key_of

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.database]


class TestHybridEngineContract(SessionContract):
    SessionStore = SessionStore

    @pytest.fixture(autouse=True)
    def _stores(self, elastic_redis):
        self.redis = elastic_redis.client()

    def stored_ttl(self, session_key: str) -> int:
        # The Redis copy expires with the durable row (PEXPIREAT of its expiry);
        # read from Redis, as the async tests cannot query the database here.
        return int(self.redis.ttl(redis_key_of(session_key)))

    def test_durable_expiry_matches_the_redis_copy(self):
        """Both stores agree on when a saved session ends."""
        self.session["a"] = 1
        self.session.set_expiry(300)
        self.session.save()
        key = self.session.session_key
        row = DurableSession.objects.get(pk=storage_id(key))
        assert abs((row.expires_at - int(time.time())) - self.stored_ttl(key)) <= 2
        assert 290 <= self.stored_ttl(key) <= 300
