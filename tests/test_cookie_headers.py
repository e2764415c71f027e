"""Every response that sets or deletes the session cookie varies on Cookie, and the
cookie carries exactly the configured attributes, on each path the middleware has.

See CVE-2026-35192 (a Set-Cookie without ``Vary: Cookie`` under
SESSION_SAVE_EVERY_REQUEST, fixed in Django 5.2.14) and CVE-2026-48587 (``Vary``
values with whitespace).
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import pytest
from django.conf import settings
from django.db.models import F
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import include, path

from elastic_sessions.connection import get_client
from elastic_sessions.keys import storage_id
from elastic_sessions.models import DurableSession

from .contract import redis_key_of

COOKIE = settings.SESSION_COOKIE_NAME
DOMAIN = ".shop.example"
PATH = "/app/"
AGE = 3 * 24 * 3600
# Morsel attributes a session cookie carries here: no Comment, no Version.
PERSISTENT = {"domain", "path", "secure", "httponly", "samesite", "max-age", "expires"}
EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"


def vary_then_read(request: HttpRequest, header: str) -> HttpResponse:
    """A view that sets its own Vary (``+`` stands for a space) and reads the session."""
    response = HttpResponse(str(request.session.get("a")))
    response["Vary"] = header.replace("+", " ")
    return response


urlpatterns = [
    path("", include("tests.urls")),
    path("vary-then-read/<str:header>/", vary_then_read),
]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls(__name__)]


def harden(settings, engine):
    """Use ``engine`` behind hardened, non-default cookie settings."""
    settings.SESSION_ENGINE = f"elastic_sessions.backends.{engine}"
    settings.SESSION_COOKIE_SECURE = True
    settings.SESSION_COOKIE_HTTPONLY = True
    settings.SESSION_COOKIE_SAMESITE = "Strict"
    settings.SESSION_COOKIE_DOMAIN = DOMAIN
    settings.SESSION_COOKIE_PATH = PATH
    settings.SESSION_COOKIE_AGE = AGE
    return engine


@pytest.fixture(params=["redis", pytest.param("hybrid", marks=pytest.mark.database)])
def engine(request, settings):
    """Each engine, hardened (see ``harden``)."""
    return harden(settings, request.param)


def vary(response):
    """The Vary header's field names, parsed as RFC 9110 says, lower-cased."""
    return [name.strip().lower() for name in response.get("Vary", "").split(",") if name.strip()]


def assert_varies_on_cookie(response):
    assert vary(response).count("cookie") == 1, response.get("Vary")


def attributes(morsel):
    return {name for name, value in morsel.items() if value not in ("", None, False)}


def assert_flags(morsel):
    assert morsel["secure"] is True
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["domain"] == DOMAIN
    assert morsel["path"] == PATH


def assert_session_cookie(response, *, max_age=AGE):
    """The cookie is set, with the configured attributes and an expiry ``max_age`` away."""
    assert_varies_on_cookie(response)
    morsel = response.cookies[COOKIE]
    assert morsel.value
    assert_flags(morsel)
    if max_age is None:
        assert attributes(morsel) == PERSISTENT - {"max-age", "expires"}
        return morsel
    assert attributes(morsel) == PERSISTENT
    assert max_age - 2 <= int(morsel["max-age"]) <= max_age
    expires = parsedate_to_datetime(morsel["expires"]).timestamp()
    assert abs(expires - (time.time() + int(morsel["max-age"]))) <= 2
    return morsel


def assert_no_session_cookie(response):
    assert COOKIE not in response.cookies


def signed_in(client):
    assert client.get("/login/alice/").status_code == 200
    return client.cookies[COOKIE].value


def slide_due(engine_name, key, *, in_redis=True):
    """Move the session's expiry an hour back, so the next load slides it."""
    if in_redis:
        get_client().expire(redis_key_of(key), AGE - 3600)
    if engine_name == "hybrid":
        DurableSession.objects.filter(pk=storage_id(key)).update(expires_at=F("expires_at") - 3600)


def test_first_save_sets_the_configured_cookie(engine):
    """Creating a session sets the cookie with every configured flag and Vary: Cookie."""
    response = Client().get("/set/a/1/")
    assert response.status_code == 200
    assert_session_cookie(response)


def test_a_change_sets_the_configured_cookie(engine):
    """Changing a session re-sends the same key with the configured flags."""
    client = Client()
    client.get("/set/a/1/")
    key = client.cookies[COOKIE].value
    response = client.get("/set/a/2/")
    assert assert_session_cookie(response).value == key


def test_unchanged_session_saved_every_request_varies_on_cookie(engine, settings):
    """CVE-2026-35192: an unmodified session re-saved by SESSION_SAVE_EVERY_REQUEST varies."""
    settings.SESSION_SAVE_EVERY_REQUEST = True
    client = Client()
    client.get("/set/a/1/")
    assert_session_cookie(client.get("/get/a/"))
    # Even a view that never read the session re-sends the cookie, so it must vary too.
    assert_session_cookie(client.get("/plain/"))


def test_touch_only_refresh_sets_the_configured_cookie(engine):
    """A read that slid the idle expiry re-sends the cookie with the new Max-Age and flags."""
    client = Client()
    client.get("/set/a/1/")
    key = client.cookies[COOKIE].value
    slide_due(engine, key)
    response = client.get("/get/a/")
    assert response.json() == {"value": "1"}
    assert assert_session_cookie(response).value == key


def test_read_without_touch_varies_but_sends_no_cookie(engine):
    """A read within the touch interval varies on Cookie and sends no Set-Cookie."""
    client = Client()
    client.get("/set/a/1/")
    response = client.get("/get/a/")
    assert_varies_on_cookie(response)
    assert_no_session_cookie(response)


def test_vary_with_whitespace_is_recognised(engine):
    """CVE-2026-48587: a view's spaced, lower-case `cookie` in Vary is kept, not repeated."""
    client = Client()
    client.get("/set/a/1/")
    slide_due(engine, client.cookies[COOKIE].value)
    response = client.get("/vary-then-read/Accept-Encoding+,++cookie/")
    assert vary(response) == ["accept-encoding", "cookie"]
    assert_session_cookie(response)


def test_vary_with_trailing_whitespace_still_varies(engine):
    """A Vary value ending in whitespace keeps its names and still varies on Cookie."""
    client = Client()
    client.get("/set/a/1/")
    response = client.get("/vary-then-read/Accept-Encoding+,+cookie+/")
    # Django's patch_vary_headers() does not strip the value's ends, so it may
    # append a second, harmless "Cookie"; what matters is that none is missing.
    assert vary(response)[:2] == ["accept-encoding", "cookie"]
    assert set(vary(response)) == {"accept-encoding", "cookie"}


def test_login_cycles_the_key_with_the_configured_cookie(engine):
    """Login's cycle_key sends the new key with every flag; the old key is gone."""
    client = Client()
    client.get("/set/a/1/")
    old = client.cookies[COOKIE].value
    response = client.get("/login/alice/")
    morsel = assert_session_cookie(response)
    assert morsel.value != old
    assert client.get("/get/a/").json() == {"value": "1"}


def test_logout_deletes_the_cookie_where_it_was_set(engine):
    """Logout deletes the cookie with the configured Domain, Path and SameSite, and varies."""
    client = Client()
    signed_in(client)
    response = client.get("/logout/")
    assert_varies_on_cookie(response)
    morsel = response.cookies[COOKIE]
    assert morsel.value == ""
    assert morsel["domain"] == DOMAIN
    assert morsel["path"] == PATH
    assert morsel["samesite"] == "Strict"
    assert morsel["max-age"] == 0
    assert morsel["expires"] == EPOCH


def test_logout_deletion_keeps_secure_and_httponly(engine):
    """The deleting Set-Cookie carries Secure and HttpOnly like every other session cookie."""
    client = Client()
    signed_in(client)
    morsel = client.get("/logout/").cookies[COOKIE]
    assert morsel["secure"] is True
    assert morsel["httponly"] is True


def test_expire_at_browser_close_sets_no_max_age(engine, settings):
    """With SESSION_EXPIRE_AT_BROWSER_CLOSE the cookie has every flag but no Max-Age/Expires."""
    settings.SESSION_EXPIRE_AT_BROWSER_CLOSE = True
    client = Client()
    assert_session_cookie(client.get("/set/a/1/"), max_age=None)
    assert_session_cookie(client.get("/login/alice/"), max_age=None)
    slide_due(engine, client.cookies[COOKIE].value)
    response = client.get("/get/a/")
    assert_varies_on_cookie(response)
    assert_no_session_cookie(response)


def test_no_session_access_no_vary_no_cookie(engine):
    """A view that never touches the session gets neither Vary: Cookie nor Set-Cookie."""
    client = Client()
    fresh = client.get("/plain/")
    assert "cookie" not in vary(fresh)
    assert_no_session_cookie(fresh)
    client.get("/set/a/1/")
    with_cookie = client.get("/plain/")
    assert "cookie" not in vary(with_cookie)
    assert_no_session_cookie(with_cookie)


@pytest.fixture
def killed_redis(redis_factory, use_server):
    """A private server the engines use, with short timeouts, to kill."""
    server = redis_factory()
    use_server(server, SOCKET_TIMEOUT=0.2, RETRIES=0, BREAKER_PROBE_INTERVAL=60)
    return server


def assert_outage_response(response):
    assert response.status_code == 503
    assert response["Cache-Control"] == "no-store"
    assert_varies_on_cookie(response)
    assert_no_session_cookie(response)


@pytest.mark.parametrize("url", ["/get/a/", "/set/a/2/", "/login/bob/", "/logout/"])
def test_redis_outage_503_varies_and_keeps_the_cookie(settings, killed_redis, url):
    """While Redis is down the 503 varies on Cookie, is not stored, and sets no cookie."""
    harden(settings, "redis")
    client = Client(raise_request_exception=False)
    client.get("/set/a/1/")
    killed_redis.kill()
    assert_outage_response(client.get(url))


def test_redis_outage_503_when_saved_every_request(settings, killed_redis):
    """Under SESSION_SAVE_EVERY_REQUEST the failed save of an unread session is a 503 too."""
    harden(settings, "redis")
    settings.SESSION_SAVE_EVERY_REQUEST = True
    client = Client(raise_request_exception=False)
    client.get("/set/a/1/")
    killed_redis.kill()
    assert_outage_response(client.get("/plain/"))


@pytest.mark.database
def test_hybrid_during_a_redis_outage_sets_the_configured_cookie(settings, killed_redis):
    """The hybrid engine served from the database keeps every header and flag right."""
    engine = harden(settings, "hybrid")
    client = Client()
    client.get("/set/a/1/")
    key = client.cookies[COOKIE].value
    killed_redis.kill()
    read = client.get("/get/a/")
    assert read.json() == {"value": "1"}
    assert_varies_on_cookie(read)
    assert_no_session_cookie(read)
    assert assert_session_cookie(client.get("/set/a/2/")).value == key
    slide_due(engine, key, in_redis=False)
    touched = client.get("/get/a/")
    assert touched.json() == {"value": "2"}
    assert assert_session_cookie(touched).value == key
    new_key = signed_in(client)
    assert new_key != key
    logout = client.get("/logout/")
    assert_varies_on_cookie(logout)
    assert logout.cookies[COOKIE].value == ""
    assert logout.cookies[COOKIE]["domain"] == DOMAIN
