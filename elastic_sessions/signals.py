from __future__ import annotations

from django.dispatch import Signal

# A new session was written for the first time.  Args: storage_id.
session_created = Signal()
# cycle_key moved a session to a new key.  Args: old_storage_id, storage_id.
session_rotated = Signal()
# Sessions were ended through elastic_sessions.api.  Args: user_id, storage_ids.
session_revoked = Signal()
# The store failed: the middleware answered 503 (args: error), or a circuit
# breaker opened (args: name, error).
store_degraded = Signal()
# A circuit breaker closed: the store answered a probe again.  Args: name, downtime.
store_recovered = Signal()
