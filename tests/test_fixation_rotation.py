"""Session fixation, over HTTP on both engines: a key the client chose is never
adopted, and the key changes at login and at a privilege change, keeping the data
and the user index, while the old key dies."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpRequest, JsonResponse
from django.test import Client
from django.urls import path

from elastic_sessions import api
from elastic_sessions.keys import is_valid_session_key, storage_id
from elastic_sessions.models import DurableSession
from elastic_sessions.storage.redis_copy import VERSION_FIELD

from . import urls
from .contract import redis_key_of

pytestmark = pytest.mark.django_db(transaction=True)

COOKIE = settings.SESSION_COOKIE_NAME
# Well-formed (32 characters from [a-z0-9]), and never issued by this run.
PLANTED_KEYS = ["a" * 32, "0" * 32, "fixat10nfixat10nfixat10nfixat10n"]


def whoami(request: HttpRequest) -> JsonResponse:
    """A page that uses ``request.user`` (as most pages of a signed-in user do)."""
    return JsonResponse({"user": request.user.get_username(), "cart": request.session.get("cart")})


urlpatterns = [path("whoami/", whoami), *urls.urlpatterns]


@pytest.fixture(params=["redis", pytest.param("hybrid", marks=pytest.mark.database)])
def engine(request, settings):
    settings.SESSION_ENGINE = f"elastic_sessions.backends.{request.param}"
    settings.ROOT_URLCONF = __name__
    return request.param


@pytest.fixture
def r(elastic_redis):
    return elastic_redis.client()


def browser(key=None):
    """A test client holding ``key`` as its session cookie (as a browser would)."""
    client = Client()
    if key is not None:
        client.cookies[COOKIE] = key
    return client


def cookie_of(client):
    return client.cookies[COOKIE].value


def is_live(r, key):
    """True if Redis or the database still holds the session under ``key``.

    A deleted hybrid session may leave a fence in Redis: a hash holding only a version.
    """
    redis_fields = set(r.hkeys(redis_key_of(key))) - {VERSION_FIELD}
    return bool(redis_fields) or DurableSession.objects.filter(pk=storage_id(key)).exists()


def seen_by(client):
    """What a request with ``client``'s cookie finds: the cart and the signed-in user."""
    return client.get("/keys/cart/").json()


def listed(username):
    user = get_user_model().objects.get(username=username)
    return [info.storage_id for info in api.list_sessions(user)]


@pytest.mark.parametrize("planted", PLANTED_KEYS)
def test_unknown_well_formed_key_is_never_adopted(engine, r, planted):
    """A well-formed key that does not exist is not adopted: a read sets no cookie and
    stores nothing, a write issues a key of ours and stores nothing under the planted one."""
    client = browser(planted)
    response = client.get("/get/cart/")
    assert response.json() == {"value": None}
    assert COOKIE not in response.cookies or response.cookies[COOKIE].value == ""
    assert r.dbsize() == 0

    client = browser(planted)
    response = client.get("/set/cart/apple/")
    issued = response.cookies[COOKIE].value
    assert is_valid_session_key(issued)
    assert issued != planted
    assert not is_live(r, planted)
    assert seen_by(browser(issued))["values"] == {"cart": "apple"}
    assert seen_by(browser(planted))["values"] == {"cart": None}


def test_login_rotates_the_key_keeping_data_and_index(engine, r):
    """Login moves an anonymous cart to a new key, listed alone in the user's index;
    the pre-login key is dead."""
    client = browser()
    client.get("/set/cart/apple/")
    anonymous = cookie_of(client)

    client.get("/login/ana/")
    signed_in = cookie_of(client)
    assert is_valid_session_key(signed_in)
    assert signed_in != anonymous
    seen = seen_by(client)
    assert seen["values"] == {"cart": "apple"}
    assert seen["user"] is not None
    assert listed("ana") == [storage_id(signed_in)]
    assert not is_live(r, anonymous)
    assert seen_by(browser(anonymous)) == {"values": {"cart": None}, "user": None}


def test_logout_deletes_the_session(engine, r):
    """Logout deletes the session and its index entry; its cookie then finds nothing."""
    client = browser()
    client.get("/login/ana/")
    client.get("/set/cart/apple/")
    key = cookie_of(client)

    response = client.get("/logout/")
    assert response.cookies[COOKIE].value != key
    assert not is_live(r, key)
    assert listed("ana") == []
    assert seen_by(browser(key)) == {"values": {"cart": None}, "user": None}


def test_planted_key_is_useless_after_the_victim_signs_in(engine, r):
    """Classic fixation: a key the attacker got from the site and planted in the victim's
    browser gives the attacker nothing once the victim signs in."""
    attacker = browser()
    attacker.get("/set/lure/1/")
    planted = cookie_of(attacker)

    victim = browser(planted)
    victim.get("/set/cart/apple/")
    victim.get("/login/victim/")
    assert cookie_of(victim) != planted
    assert seen_by(victim)["values"] == {"cart": "apple"}
    assert seen_by(victim)["user"] is not None

    assert seen_by(attacker) == {"values": {"cart": None}, "user": None}
    assert not is_live(r, planted)
    assert listed("victim") == [storage_id(cookie_of(victim))]


def test_privilege_change_rotates_the_key(engine, r):
    """A user made staff between two requests gets a new key on the second response;
    the old key is dead, the data and the index entry move to the new key."""
    client = browser()
    client.get("/login/ana/")
    client.get("/set/cart/apple/")
    before = cookie_of(client)
    client.get("/whoami/")
    assert cookie_of(client) == before  # no change, no rotation
    get_user_model().objects.filter(username="ana").update(is_staff=True)

    response = client.get("/whoami/")
    assert response.json() == {"user": "ana", "cart": "apple"}
    assert COOKIE in response.cookies
    after = response.cookies[COOKIE].value
    assert is_valid_session_key(after)
    assert after != before
    assert not is_live(r, before)
    assert seen_by(browser(before)) == {"values": {"cart": None}, "user": None}
    assert seen_by(client)["values"] == {"cart": "apple"}
    assert listed("ana") == [storage_id(after)]
