"""The optional session policies: applied at login, and when privileges change.

At login (Django's ``user_logged_in``, after ``login()``):

* the session key rotates if ``login()`` kept it (the same user signing in again);

* ``MAX_SESSIONS_PER_USER``: past the limit, end the user's oldest sessions
  (``"evict_oldest"``) or refuse the login (``"deny"``: ``SessionLimitExceeded``,
  a 403);
* ``BIND_USER_AGENT``, ``BIND_IPV4_PREFIX``, ``BIND_IPV6_PREFIX``: record what
  the session is bound to (binding.py; each load checks it, backends/base.py);
* ``STAFF_IDLE_TIMEOUT``, ``STAFF_ABSOLUTE_TIMEOUT``: stricter expiry for staff;
* record the user's privileges, so that the middleware rotates the key when an
  admin changes them mid-session (:func:`check_privileges`).

They act on the elastic engines' sessions only.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.contrib.auth import SESSION_KEY as USER_ID_KEY
from django.http import HttpRequest
from django.utils.functional import LazyObject, empty

from . import api
from .backends.base import DEADLINE_CAP_KEY, ElasticSessionBase
from .binding import BINDING_KEY, binding_for
from .conf import elastic_settings
from .exceptions import SessionLimitExceeded

# Reserved session key: the user's privileges at login, as privilege_fingerprint().
PRIVILEGES_KEY = "_elastic_privileges"
# Where Django's set_expiry() keeps a session's own expiry.
EXPIRY_KEY = "_session_expiry"
# How long a login's claim on a place under MAX_SESSIONS_PER_USER "deny" lasts
# when the login never completes (see _claim_place).
LOGIN_CLAIM_SECONDS = 60

_limit_logger = logging.getLogger("django.security.SessionLimitExceeded")
_privilege_logger = logging.getLogger("django.security.PrivilegeChange")


def on_user_logged_in(
    sender: object, request: HttpRequest | None, user: Any, **kwargs: object
) -> None:
    """The ``user_logged_in`` receiver: every login-time policy, in order.

    Raises ``SessionLimitExceeded`` (a 403) when the ``"deny"`` policy refuses
    the login; the session is ended first, so nothing of the login remains.
    """
    session = getattr(request, "session", None)
    if not isinstance(session, ElasticSessionBase):
        return
    if session.initial_key is not None and session.session_key == session.initial_key:
        # Django's login() keeps the key when the same user signs in again; a
        # login always gets a new key here (fixation), keeping data and index.
        session.cycle_key()
    enforce_session_limit(session, user)
    binding = binding_for(session.client) if session.client is not None else None
    if binding is None:
        session.pop(BINDING_KEY, None)
    else:
        session[BINDING_KEY] = binding
    session[PRIVILEGES_KEY] = privilege_fingerprint(user)
    apply_staff_timeouts(session, user)


def enforce_session_limit(session: ElasticSessionBase, user: Any) -> None:
    """Keep ``user`` at ``MAX_SESSIONS_PER_USER`` sessions, counting ``session``.

    ``"evict_oldest"`` revokes the oldest others (by creation time) through
    ``api.revoke_session``, which sends ``session_revoked``; ``"deny"`` flushes
    ``session`` and raises ``SessionLimitExceeded``.

    Under ``"deny"`` the session is stored before the count (:func:`_claim_place`),
    so simultaneous logins see each other: they can all be refused, never all let
    through past the limit.  Under ``"evict_oldest"`` the count is read, not locked:
    logins at the same instant may leave the user one session over the limit each,
    until the next login evicts down to it.
    """
    limit = elastic_settings.MAX_SESSIONS_PER_USER
    if not limit:
        return
    deny = elastic_settings.SESSION_LIMIT_POLICY == "deny"
    if deny:
        _claim_place(session)
    current = session.storage_id
    # Without a claim, the new session enters the user's index only when the
    # response saves it.
    others = [info for info in api.list_sessions(user) if info.storage_id != current]
    excess = len(others) + 1 - limit
    if excess <= 0:
        return
    user_id = api.user_id_of(user)
    if deny:
        session.flush()
        _limit_logger.warning(
            "Refused a login of user %s: %d sessions open, MAX_SESSIONS_PER_USER is %d.",
            user_id,
            len(others),
            limit,
        )
        raise SessionLimitExceeded(
            f"You are signed in on {len(others)} devices already, the most allowed. "
            "Sign out on one of them, then sign in again."
        )
    others.sort(key=lambda info: info.created.timestamp() if info.created else 0)
    oldest = [info.storage_id for info in others[:excess]]
    ended = [sid for sid in oldest if api.revoke_session(user, sid)]
    _limit_logger.info(
        "Ended the %d oldest sessions of user %s at login (MAX_SESSIONS_PER_USER is %d): %s",
        len(ended),
        user_id,
        limit,
        ", ".join(ended),
    )


def _claim_place(session: ElasticSessionBase) -> None:
    """Store the signing-in session, under the user, before counting.

    Every login stores itself, then counts: of two simultaneous logins, the
    later count sees both.  The stored copy expires after
    ``LOGIN_CLAIM_SECONDS`` unless the response's save (the session is modified
    again here) gives it its real expiry: a login that fails after this point
    leaves no session that holds a place for long.
    """
    expiry = session.get(EXPIRY_KEY)
    session.set_expiry(LOGIN_CLAIM_SECONDS)
    session.save()
    if expiry is None:
        session.pop(EXPIRY_KEY, None)
    else:
        session[EXPIRY_KEY] = expiry


def privilege_fingerprint(user: Any) -> str:
    """The user's privilege flags: ``a`` active, ``s`` staff, ``u`` superuser."""
    flags = (
        ("a", getattr(user, "is_active", True)),
        ("s", getattr(user, "is_staff", False)),
        ("u", getattr(user, "is_superuser", False)),
    )
    return "".join(letter for letter, on in flags if on)


def apply_staff_timeouts(session: ElasticSessionBase, user: Any) -> None:
    """Give a staff user's session the stricter ``STAFF_*`` timeouts; never looser.

    The idle timeout replaces the session's expiry only when it is shorter than
    the current expiry age; the absolute one caps the deadline at now plus
    ``STAFF_ABSOLUTE_TIMEOUT`` (``DEADLINE_CAP_KEY``, applied by the next write).
    """
    if not getattr(user, "is_staff", False):
        return
    idle = elastic_settings.STAFF_IDLE_TIMEOUT
    if idle is not None and idle < session.get_expiry_age():
        session.set_expiry(idle)
    absolute = elastic_settings.STAFF_ABSOLUTE_TIMEOUT
    if absolute is not None:
        cap = int(time.time()) + absolute
        current = session.get(DEADLINE_CAP_KEY)
        if not (type(current) is int and 0 < current <= cap):
            session[DEADLINE_CAP_KEY] = cap


def check_privileges(request: HttpRequest) -> None:
    """After the view: rotate the session key if the signed-in user's privileges
    changed since login; end the session of a user who may no longer sign in.

    Only when the view (or a middleware) already read ``request.user``: this
    never costs a query of its own.  Sessions without a recorded fingerprint
    (signed in before this check existed, or by another engine) are left alone.
    """
    session = getattr(request, "session", None)
    user = getattr(request, "user", None)
    if not isinstance(session, ElasticSessionBase) or session.store_unavailable is not None:
        return
    if isinstance(user, LazyObject) and user._wrapped is empty:
        # Async views read the user with request.auser(), which Django caches
        # apart from the lazy request.user (django/contrib/auth/middleware.py).
        user = getattr(request, "_acached_user", None)
    if user is None:
        return
    recorded = session.get(PRIVILEGES_KEY)
    if recorded is None or USER_ID_KEY not in session:
        return
    if not user.is_authenticated:
        # Django's auth refused the session's user (inactive under ModelBackend,
        # deleted): the session still names them, so end it explicitly.
        _end(session, "user %s can no longer sign in", session.get(USER_ID_KEY))
        return
    if session.get(USER_ID_KEY) != api.user_id_of(user):
        return
    fingerprint = privilege_fingerprint(user)
    if fingerprint == recorded:
        return
    if not user.is_active:
        _end(session, "user %s is no longer active", api.user_id_of(user))
        return
    old = session.storage_id
    session.cycle_key()
    session[PRIVILEGES_KEY] = fingerprint
    apply_staff_timeouts(session, user)
    _privilege_logger.info(
        "Rotated session %s to %s: the privileges of user %s changed from %r to %r.",
        old,
        session.storage_id,
        api.user_id_of(user),
        recorded,
        fingerprint,
    )


def _end(session: ElasticSessionBase, why: str, user_id: object) -> None:
    sid = session.storage_id
    session.flush()
    _privilege_logger.info("Ended session %s: " + why + ".", sid, user_id)
