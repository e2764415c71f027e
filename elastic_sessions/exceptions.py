from __future__ import annotations

from django.core.exceptions import PermissionDenied, SuspiciousOperation


class ElasticSessionsError(Exception):
    """Root of every error this package raises on purpose."""


class SessionStoreUnavailable(ElasticSessionsError):
    """The session store could not be reached or refused to serve.

    Raised for outages (connection refused, timeouts, a server that is loading,
    out of memory or read-only), never for programming errors.  The
    ``elastic_sessions.middleware.SessionMiddleware`` turns it into a 503 with
    ``Retry-After`` and keeps the session cookie, so nobody is logged out.
    """


class CorruptSessionData(ElasticSessionsError):
    """A stored session could not be decoded (wrong type, bad value, bad metadata)."""


class SuspiciousSessionKey(SuspiciousOperation):
    """A cookie carried a session key that no engine of ours could have issued."""


class SessionLimitExceeded(ElasticSessionsError, PermissionDenied):
    """A login would exceed ``MAX_SESSIONS_PER_USER`` under the ``"deny"`` policy.

    Raised out of Django's ``login()`` (by the ``user_logged_in`` receiver) after
    the new session was ended; as a ``PermissionDenied`` the request answers 403.
    """
