"""The durable copy of each session, for the hybrid engine.

The layout mirrors the Redis hash: one row per session (its times, owner and a
version) and one row per stored field, so a save writes only the fields that
changed, as in Redis, and two requests that change different keys never
overwrite each other's rows.  Field names and values are the very bytes Redis
holds (see :mod:`elastic_sessions.codec`): a session moves between the stores
without being decoded.
"""

from __future__ import annotations

from django.db import models


class DurableSession(models.Model):
    """One session's durable row, under the same storage id as its Redis hash."""

    storage_id = models.CharField(max_length=22, primary_key=True)
    # Django's login() value as stored (a string), for per-user lookups; NULL
    # when nobody is signed in (no user id is too odd to be one, "" included).
    user_id = models.CharField(  # noqa: DJ001
        max_length=255, null=True, blank=True, db_index=True
    )
    # Epoch seconds, as in the Redis metadata.
    created = models.BigIntegerField()
    deadline = models.BigIntegerField()
    # Idle timeout in seconds; 0 for a fixed expiry that never slides.
    idle = models.BigIntegerField()
    # When the session ends unless it is used again (never past the deadline).
    # Pure touches move it only when it would drift by more than
    # DATABASE_TOUCH_DRIFT, so an unchanged request does not write here.
    expires_at = models.BigIntegerField(db_index=True)
    # Bumped by every write; Redis copies carry it, so a copy that missed a
    # write is recognised and dropped instead of served.
    version = models.BigIntegerField(default=1)
    # Epoch seconds of the last write or durable touch (to DATABASE_TOUCH_DRIFT),
    # and the client seen then (IP address and device, see client.py).
    last_seen = models.BigIntegerField(null=True, blank=True, db_index=True)
    client = models.BinaryField(null=True, blank=True)

    class Meta:
        db_table = "elastic_sessions_session"
        verbose_name = "durable session"

    def __str__(self) -> str:
        return self.storage_id


class DurableSessionField(models.Model):
    """One top-level session key of a session: its stored field name and value.

    Unique per session *key*, not per field name: a key whose value changes form
    (text, serialized, compressed: see codec.py) keeps one row, updated in
    place by the same upsert, with no delete of its other forms.
    """

    session = models.ForeignKey(
        DurableSession, on_delete=models.CASCADE, related_name="fields", db_column="storage_id"
    )
    # The session key as UTF-8 (surrogates passed through), without the mark.
    key = models.BinaryField(max_length=1024)
    # The Redis field name (the key with its form's mark) and value.
    name = models.BinaryField(max_length=1024)
    value = models.BinaryField()

    class Meta:
        db_table = "elastic_sessions_field"
        constraints = [
            models.UniqueConstraint(fields=["session", "key"], name="elastic_sessions_field_key")
        ]

    def __str__(self) -> str:
        return f"{self.session_id}: {bytes(self.name)!r}"


class RedisInvalidation(models.Model):
    """A session written or deleted while Redis could not be reached.

    Redis may still hold the session as it was before (a pause, a network
    split): before Redis is trusted again, these copies are deleted there.
    """

    storage_id = models.CharField(max_length=22, primary_key=True)
    queued_at = models.BigIntegerField(db_index=True)

    class Meta:
        db_table = "elastic_sessions_redis_invalidation"

    def __str__(self) -> str:
        return self.storage_id


class ActiveSession(models.Model):
    """No table: the admin's handle on sessions wherever they live, and its permissions.

    ``view_activesession`` lists and inspects sessions' metadata,
    ``revoke_activesession`` ends them, and ``view_session_data`` shows their
    decoded items (sensitive values masked).
    """

    storage_id = models.CharField(max_length=22, primary_key=True)

    class Meta:
        managed = False
        default_permissions = ("view",)
        permissions = [
            ("revoke_activesession", "Can revoke active sessions"),
            ("view_session_data", "Can see the decoded data of sessions"),
        ]
        verbose_name = "active session"

    def __str__(self) -> str:
        return self.storage_id
