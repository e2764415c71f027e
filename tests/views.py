from __future__ import annotations

from django.contrib.auth import get_user_model, login, logout
from django.http import HttpRequest, HttpResponse, JsonResponse


def set_value(request: HttpRequest, key: str, value: str) -> HttpResponse:
    request.session[key] = value
    return HttpResponse("ok")


def get_value(request: HttpRequest, key: str) -> JsonResponse:
    return JsonResponse({"value": request.session.get(key)})


async def aset_value(request: HttpRequest, key: str, value: str) -> HttpResponse:
    await request.session.aset(key, value)
    return HttpResponse("ok")


async def aget_value(request: HttpRequest, key: str) -> JsonResponse:
    return JsonResponse({"value": await request.session.aget(key)})


def read_then_set(request: HttpRequest, read: str, key: str, value: str) -> JsonResponse:
    """Read one key, then set another (a lazily found unreadable value must not 500)."""
    seen = request.session.get(read)
    request.session[key] = value
    return JsonResponse({"read": seen})


async def aread_then_set(request: HttpRequest, read: str, key: str, value: str) -> JsonResponse:
    seen = await request.session.aget(read)
    await request.session.aset(key, value)
    return JsonResponse({"read": seen})


def login_view(request: HttpRequest, username: str) -> HttpResponse:
    user, _ = get_user_model().objects.get_or_create(username=username)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return HttpResponse("in")


def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return HttpResponse("out")


def plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse("plain")


def session_keys(request: HttpRequest, keys: str) -> JsonResponse:
    """The values of several keys (comma-separated) and the signed-in user, in one load."""
    values = {key: request.session.get(key) for key in keys.split(",")}
    return JsonResponse({"values": values, "user": request.session.get("_auth_user_id")})


def swap_value(request: HttpRequest, key: str, value: str) -> JsonResponse:
    """Set ``key`` and answer what it held before, and the signed-in user."""
    before = request.session.get(key)
    request.session[key] = value
    return JsonResponse({"before": before, "user": request.session.get("_auth_user_id")})
