"""The signed-in user's own sessions: list them, end one, or end all the others.

Every state change is a POST behind CSRF protection, and every lookup goes
through :mod:`elastic_sessions.api`, which refuses another user's session
atomically: a storage id copied from elsewhere ends nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from django.apps import apps
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render, resolve_url
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_GET, require_POST

from .api import SessionInfo, list_sessions, revoke_session, revoke_user_sessions
from .geo import locate_ip
from .keys import is_valid_session_key, storage_id


@dataclass(frozen=True, slots=True)
class ListedSession:
    """One row of the page: a :class:`~elastic_sessions.api.SessionInfo` and its location."""

    storage_id: str
    created: datetime | None
    expires: datetime
    last_seen: datetime | None
    is_current: bool
    ip: str | None
    device: str
    # Where the IP address is ("Lisbon, Portugal"), or None (see geo.locate_ip).
    location: str | None

    @classmethod
    def of(cls, info: SessionInfo) -> ListedSession:
        return cls(**asdict(info), location=locate_ip(info.ip))


def _say(request: HttpRequest, level: int, text: str) -> None:
    # Messages are a nicety: a site without django.contrib.messages still works.
    if apps.is_installed("django.contrib.messages"):
        messages.add_message(request, level, text, fail_silently=True)


def _current_sid(request: HttpRequest) -> str | None:
    key = request.session.session_key
    return storage_id(key) if key and is_valid_session_key(key) else None


@require_GET
@login_required
def sessions(request: HttpRequest) -> HttpResponse:
    """The user's sessions, this one first and marked."""
    infos = list_sessions(request.user, current_session_key=request.session.session_key)
    listed = [ListedSession.of(info) for info in infos]
    return render(
        request,
        "elastic_sessions/sessions.html",
        {"sessions": listed, "others": sum(not s.is_current for s in listed)},
    )


@require_POST
@csrf_protect
@login_required
def revoke(request: HttpRequest, sid: str) -> HttpResponse:
    """End one of the user's sessions; ending this very session signs out.

    Another user's storage id gets the same answer as a session that is gone,
    so the page never confirms that somebody else's session exists.
    """
    if sid == _current_sid(request):
        # Deleting the session this request runs in from under it would leave
        # the response to save a session that is gone: log out properly instead
        # (it ends the session and rotates the CSRF token).
        logout(request)
        _say(request, messages.SUCCESS, "You are signed out.")
        return HttpResponseRedirect(resolve_url(settings.LOGOUT_REDIRECT_URL or settings.LOGIN_URL))
    if revoke_session(request.user, sid):
        _say(request, messages.SUCCESS, "Signed that session out.")
    else:
        _say(request, messages.ERROR, "No such session of yours; it may have ended already.")
    return redirect("elastic_sessions:sessions")


@require_POST
@csrf_protect
@login_required
def revoke_others(request: HttpRequest) -> HttpResponse:
    """End every session of the user except this one ("sign out everywhere else")."""
    ended = revoke_user_sessions(request.user, keep_session_key=request.session.session_key)
    _say(request, messages.SUCCESS, f"Signed out {ended} other session{'' if ended == 1 else 's'}.")
    return redirect("elastic_sessions:sessions")
