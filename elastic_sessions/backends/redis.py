"""``SESSION_ENGINE = "elastic_sessions.backends.redis"``: sessions in Redis only."""

from __future__ import annotations

from django.contrib.auth import SESSION_KEY as USER_ID_KEY

from ..codec import field_variants
from ..storage.redis import RedisSessionStorage
from .base import ElasticSessionBase, require_app_installed

require_app_installed()


class SessionStore(ElasticSessionBase):
    """Redis-only sessions: fast, and loud (503) rather than silent when Redis is down."""

    storage = RedisSessionStorage(owner_fields=field_variants(USER_ID_KEY))
