"""The test URLs (tests/urls.py) plus the views the session policy tests need."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

from . import urls


def whoami(request: HttpRequest) -> JsonResponse:
    """The signed-in user's name (None: anonymous); reads ``request.user``."""
    user = request.user
    return JsonResponse({"user": user.get_username() if user.is_authenticated else None})


async def awhoami(request: HttpRequest) -> JsonResponse:
    """``whoami`` for async views, which read the user with ``request.auser()``."""
    user = await request.auser()
    return JsonResponse({"user": user.get_username() if user.is_authenticated else None})


def expiry(request: HttpRequest) -> JsonResponse:
    """The session's expiry age and the signed-in user's id, without ``request.user``."""
    session = request.session
    return JsonResponse({"age": session.get_expiry_age(), "user": session.get("_auth_user_id")})


urlpatterns = [
    *urls.urlpatterns,
    path("whoami/", whoami),
    path("async/whoami/", awhoami),
    path("expiry/", expiry),
]
