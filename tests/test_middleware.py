"""The middleware keeps Django's cookie behaviour and refreshes it when expiry slides."""

from __future__ import annotations

from django.conf import settings
from django.test import Client

from .contract import redis_key_of

COOKIE = settings.SESSION_COOKIE_NAME


def test_touch_only_response_refreshes_cookie_max_age(elastic_redis, settings):
    """A read that slid the idle expiry re-sends the cookie with the new Max-Age and Vary."""
    settings.ELASTIC_SESSIONS = {**settings.ELASTIC_SESSIONS, "TOUCH_INTERVAL": 60}
    client = Client()
    client.get("/set/a/1/")
    key = client.cookies[COOKIE].value
    elastic_redis.client().expire(redis_key_of(key), settings.SESSION_COOKIE_AGE - 3600)
    response = client.get("/get/a/")
    cookie = response.cookies[COOKIE]
    assert cookie.value == key
    assert int(cookie["max-age"]) > settings.SESSION_COOKIE_AGE - 10
    assert cookie["httponly"]
    assert cookie["samesite"] == settings.SESSION_COOKIE_SAMESITE
    assert "Cookie" in response["Vary"]


def test_untouched_read_sends_no_cookie():
    """A read within the touch interval sends no Set-Cookie but still varies on Cookie."""
    client = Client()
    client.get("/set/a/1/")
    response = client.get("/get/a/")
    assert COOKIE not in response.cookies
    assert "Cookie" in response["Vary"]


def test_no_session_access_no_vary():
    """A view that never touches the session gets neither cookie nor Vary: Cookie."""
    response = Client().get("/plain/")
    assert COOKIE not in response.cookies
    assert "Vary" not in response


def test_browser_close_sessions_get_no_max_age_on_touch(elastic_redis, settings):
    """With SESSION_EXPIRE_AT_BROWSER_CLOSE a touch does not turn the cookie persistent."""
    settings.SESSION_EXPIRE_AT_BROWSER_CLOSE = True
    client = Client()
    client.get("/set/a/1/")
    key = client.cookies[COOKIE].value
    elastic_redis.client().expire(redis_key_of(key), settings.SESSION_COOKIE_AGE - 3600)
    response = client.get("/get/a/")
    assert COOKIE not in response.cookies


def test_logout_deletes_cookie_and_session(elastic_redis, db):
    """Logging out flushes the stored session and deletes the cookie."""
    client = Client()
    client.get("/login/alice/")
    key = client.cookies[COOKIE].value
    response = client.get("/logout/")
    assert response.cookies[COOKIE].value == ""
    assert elastic_redis.client().exists(redis_key_of(key)) == 0
