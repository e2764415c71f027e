from __future__ import annotations

import pytest

from elastic_sessions.backends.redis import SessionStore

from .contract import SessionContract, redis_key_of


class TestRedisEngineContract(SessionContract):
    SessionStore = SessionStore

    @pytest.fixture(autouse=True)
    def _redis(self, elastic_redis):
        self.redis = elastic_redis.client()

    def stored_ttl(self, session_key: str) -> int:
        return int(self.redis.ttl(redis_key_of(session_key)))
