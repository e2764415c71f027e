"""The signed-in user's own sessions page (elastic_sessions.urls), on both engines:
only one's own sessions, revoking one or all the others, CSRF and POST only."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from .test_admin import (
    browser_of,
    engine,
    hybrid_without_redis,
    listed,
    make_user,
    session_of,
    web,
)

# The fixtures of the admin tests, used here too.
__all__ = ["engine", "hybrid_without_redis", "web"]

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/account/sessions/"


def revoke_url(sid):
    return f"{PAGE}revoke/{sid}/"


REVOKE_OTHERS = PAGE + "revoke-others/"


def where(ip):
    """An IP_LOCATOR for the tests: every public address is in Lisbon."""
    return "Lisbon, Portugal"


@pytest.fixture
def alice(engine):
    return make_user("alice", staff=False)


def current_of(response):
    """The storage id of the row marked as this device."""
    found = re.findall(r'data-storage-id="([^"]+)" data-current', response.content.decode())
    assert len(found) == 1
    return found[0]


def test_lists_only_own_sessions_with_this_device_marked(alice):
    """The page lists the user's sessions, this one first and marked, and no one else's."""
    laptop, laptop_sid = browser_of(alice)
    _, phone_sid = browser_of(alice)
    _, bobs_sid = browser_of(make_user("bob", staff=False))
    response = laptop.get(PAGE)
    assert response.status_code == 200
    assert listed(response) == [laptop_sid, phone_sid]
    assert current_of(response) == laptop_sid
    assert "This device" in response.content.decode()
    assert bobs_sid not in response.content.decode()


def test_anonymous_visitor_is_sent_to_sign_in(engine):
    """The page needs a signed-in user."""
    response = Client().get(PAGE)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_revoke_one_other_session_signs_that_browser_out(alice):
    """Revoking another of one's sessions ends it: that browser's next request is anonymous."""
    laptop, _ = browser_of(alice)
    phone, phone_sid = browser_of(alice)
    response = laptop.post(revoke_url(phone_sid), follow=True)
    assert "Signed that session out." in response.content.decode()
    assert phone_sid not in listed(response)
    assert phone.get("/keys/x/").json()["user"] is None
    assert laptop.get("/keys/x/").json()["user"] == str(alice.pk)


def test_another_users_session_can_never_be_revoked(alice):
    """A storage id of somebody else's session ends nothing and confirms nothing."""
    bob = make_user("bob", staff=False)
    bobs_browser, bobs_sid = browser_of(bob)
    anonymous_sid = session_of(bob)  # (any session not alice's)
    laptop, _ = browser_of(alice)
    for sid in (bobs_sid, anonymous_sid, "A" * 22, "not-an-id"):
        response = laptop.post(revoke_url(sid), follow=True)
        assert response.status_code == 200
        assert "No such session of yours" in response.content.decode()
    assert bobs_browser.get("/keys/x/").json()["user"] == str(bob.pk)
    assert set(listed(bobs_browser.get(PAGE))) == {bobs_sid, anonymous_sid}


def test_revoking_this_session_signs_out(alice):
    """The current session's button signs this browser out and leaves the others."""
    laptop, laptop_sid = browser_of(alice)
    phone, phone_sid = browser_of(alice)
    response = laptop.post(revoke_url(laptop_sid))
    assert response.status_code == 302
    assert laptop.get("/keys/x/").json()["user"] is None
    assert listed(phone.get(PAGE)) == [phone_sid]


def test_sign_out_everywhere_else(alice):
    """ "Sign out everywhere else" ends every other session of the user and keeps this one."""
    laptop, laptop_sid = browser_of(alice)
    others = [browser_of(alice)[0] for _ in range(2)]
    bob_browser, _ = browser_of(make_user("bob", staff=False))
    response = laptop.post(REVOKE_OTHERS, follow=True)
    assert "Signed out 2 other sessions." in response.content.decode()
    assert listed(response) == [laptop_sid]
    assert 'id="revoke-others"' not in response.content.decode()
    for browser in others:
        assert browser.get("/keys/x/").json()["user"] is None
    assert bob_browser.get("/keys/x/").json()["user"] is not None


@pytest.mark.parametrize("url", [revoke_url("A" * 22), REVOKE_OTHERS])
def test_state_changes_are_post_only(alice, url):
    """GET on the revoke URLs is 405 and ends nothing."""
    laptop, _ = browser_of(alice)
    _, phone_sid = browser_of(alice)
    assert laptop.get(url).status_code == 405
    assert laptop.get(revoke_url(phone_sid)).status_code == 405
    assert phone_sid in listed(laptop.get(PAGE))


def test_csrf_is_enforced(alice):
    """A POST without the CSRF token is refused; with it the revoke goes through."""
    laptop = Client(enforce_csrf_checks=True)
    laptop.force_login(alice)
    _, phone_sid = browser_of(alice)
    assert laptop.post(revoke_url(phone_sid)).status_code == 403
    assert laptop.post(REVOKE_OTHERS).status_code == 403
    page = laptop.get(PAGE)
    assert phone_sid in listed(page)
    token = page.context["csrf_token"]
    response = laptop.post(revoke_url(phone_sid), {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert phone_sid not in listed(laptop.get(PAGE))


def test_device_and_location_of_each_session(alice, settings):
    """A session shows the device of its last request and where its IP address is."""
    settings.ELASTIC_SESSIONS = {
        **settings.ELASTIC_SESSIONS,
        "IP_LOCATOR": f"{__name__}.where",
    }
    laptop, _ = browser_of(alice)
    firefox = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
    laptop.get("/set/seen/1/", REMOTE_ADDR="81.2.69.160", HTTP_USER_AGENT=firefox)
    page = laptop.get(PAGE, REMOTE_ADDR="81.2.69.160", HTTP_USER_AGENT=firefox)
    text = page.content.decode()
    assert "Firefox 128" in text
    assert "Windows" in text
    assert "Lisbon, Portugal" in text


def test_the_templates_can_be_overridden_and_extended(alice, web, tmp_path):
    """A site's elastic_sessions/base.html wraps the page, and a site's sessions.html can
    extend the shipped one and replace one block."""
    folder = tmp_path / "elastic_sessions"
    folder.mkdir()
    (folder / "base.html").write_text(
        "<main id='site-layout'>{% block title %}{% endblock %}|{% block content %}{% endblock %}"
        "</main>"
    )
    # Django lets a template extend the one it overrides, by the same name.
    (folder / "sessions.html").write_text(
        "{% extends 'elastic_sessions/sessions.html' %}"
        "{% block sessions_intro %}<p id='own-intro'>Mine</p>{% endblock %}"
    )
    web.TEMPLATES = [{**web.TEMPLATES[0], "DIRS": [str(tmp_path)]}]
    laptop, sid = browser_of(alice)
    text = laptop.get(PAGE).content.decode()
    assert text.startswith("<main id='site-layout'>Your sessions|")
    assert "<p id='own-intro'>Mine</p>" in text
    assert "Every browser or device" not in text
    assert listed(laptop.get(PAGE)) == [sid]


def test_user_page_works_on_the_hybrid_engine_with_redis_down(hybrid_without_redis):
    """With Redis killed, the hybrid user page lists, revokes one and signs out the others."""
    alice = make_user("alice", staff=False)
    laptop, laptop_sid = browser_of(alice)
    phone, phone_sid = browser_of(alice)
    tablet, tablet_sid = browser_of(alice)
    hybrid_without_redis.kill()

    assert set(listed(laptop.get(PAGE))) == {laptop_sid, phone_sid, tablet_sid}
    assert laptop.post(revoke_url(phone_sid)).status_code == 302
    assert phone.get("/keys/x/").json()["user"] is None
    assert laptop.post(REVOKE_OTHERS).status_code == 302
    assert tablet.get("/keys/x/").json()["user"] is None
    assert listed(laptop.get(PAGE)) == [laptop_sid]
