from __future__ import annotations

from django.dispatch import Signal

# A new session was written for the first time.  Args: storage_id.
session_created = Signal()
# cycle_key moved a session to a new key.  Args: old_storage_id, storage_id.
session_rotated = Signal()
# Sessions were ended through elastic_sessions.api.  Args: user_id, storage_ids.
session_revoked = Signal()
# The store failed a request (the redis engine answers 503).  Args: error.
store_degraded = Signal()
