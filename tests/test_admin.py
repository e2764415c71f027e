"""The admin's "Active sessions": permissions, search, filters, order, pages, revoking
and its log, hostile parameters, on both engines (the hybrid one with Redis down too)."""

from __future__ import annotations

import re
from importlib import import_module

import pytest
from django.contrib import admin
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client
from django.urls import include, path

from elastic_sessions.keys import storage_id
from elastic_sessions.models import ActiveSession

pytestmark = pytest.mark.django_db(transaction=True)


class URLConf:
    """The tests' URLs (a ROOT_URLCONF may be any object with ``urlpatterns``), built by
    ``web`` once the admin is installed: ``admin.site.urls`` reads its registry."""

    def __init__(self):
        self.urlpatterns = [
            path("admin/", admin.site.urls),
            path("account/sessions/", include("elastic_sessions.urls")),
            path("", include("tests.urls")),
        ]


ENGINES = {
    "redis": "elastic_sessions.backends.redis",
    "hybrid": "elastic_sessions.backends.hybrid",
}
LIST = "/admin/elastic_sessions/activesession/"
REVOKE = LIST + "revoke/"


def detail_url(sid):
    return f"{LIST}{sid}/change/"


# tests/settings.py is minimal; where it lacks these, the tests add them.
ADMIN_APPS = ["django.contrib.admin", "django.contrib.messages"]


def log_entries():
    """The admin's LogEntry manager (its module imports only once the admin is installed)."""
    from django.contrib.admin.models import LogEntry

    return LogEntry.objects


@pytest.fixture
def web(settings, transactional_db):
    """What a site with the admin and the sessions page has (tests/settings.py is minimal)."""
    missing = [app for app in ADMIN_APPS if app not in settings.INSTALLED_APPS]
    if missing:
        settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, *missing]
        # Its migrations did not run for the test database: make the log's table here
        # (transactional tests run outside a transaction, so SQLite allows it).
        table = log_entries().model._meta.db_table
        if table not in connection.introspection.table_names():
            with connection.schema_editor() as editor:
                editor.create_model(log_entries().model)
    settings.ROOT_URLCONF = URLConf()
    settings.TEMPLATES = [
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]
            },
        }
    ]
    settings.MIDDLEWARE = [
        "elastic_sessions.middleware.SessionMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ]
    settings.STATIC_URL = "/static/"
    yield settings
    if missing:
        # The flush after the test skips apps that are not installed, and these rows
        # point at users it deletes.
        log_entries().all().delete()


@pytest.fixture(params=sorted(ENGINES))
def engine(request, web):
    """Each test runs on both engines."""
    web.SESSION_ENGINE = ENGINES[request.param]
    return request.param


def make_user(username, *perms, staff=True, email=None):
    user = get_user_model().objects.create_user(
        username, email=email or f"{username}@example.com", password=username, is_staff=staff
    )
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


@pytest.fixture
def root(engine):
    """A superuser's browser, signed in to the admin."""
    user = get_user_model().objects.create_superuser("root", "root@example.com", "root")
    client = Client()
    client.force_login(user)
    return client


def session_of(user, expiry=None, **data):
    """A session of ``user`` saved by the configured engine; returns its storage id."""
    from django.conf import settings

    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session.update({SESSION_KEY: str(user.pk), **data})
    if expiry is not None:
        session.set_expiry(expiry)
    session.save()
    return storage_id(session.session_key)


def browser_of(user):
    """A client signed in as ``user`` (a session of its own) and that session's storage id."""
    client = Client()
    client.force_login(user)
    return client, storage_id(client.session.session_key)


def listed(response):
    """The storage ids of the rows the list shows, in order."""
    return re.findall(r'<tr class="session" data-storage-id="([^"]+)"', response.content.decode())


def test_list_shows_every_session_with_its_owner_and_counts(root):
    """The list shows each session, its user linked to their admin page, and the counts."""
    alice = make_user("alice", staff=False)
    sid = session_of(alice)
    response = root.get(LIST)
    assert response.status_code == 200
    assert sid in listed(response)
    assert len(listed(response)) == 2  # root's own session too
    assert f'href="/admin/auth/user/{alice.pk}/change/">alice</a>' in response.content.decode()
    assert response.context["counts"].active == 2
    assert re.search(r"<strong>2</strong> active", response.content.decode())


def test_view_only_staff_lists_but_cannot_revoke_or_see_data(engine):
    """view_activesession alone: the list and the metadata, no actions, no data, 403 on revoke."""
    viewer = make_user("viewer", "view_activesession")
    victim = make_user("victim", staff=False)
    sid = session_of(victim, secret_note="zq-private-note")
    client, _ = browser_of(viewer)
    response = client.get(LIST)
    assert response.status_code == 200
    assert sid in listed(response)
    assert 'name="action"' not in response.content.decode()
    assert "_selected_action" not in response.content.decode()

    page = client.get(detail_url(sid))
    assert page.status_code == 200
    assert "victim" in page.content.decode()
    assert 'id="session-data"' not in page.content.decode()
    assert "zq-private-note" not in page.content.decode()
    assert "Revoke this session" not in page.content.decode()

    for post in (
        {"action": "revoke_selected", "_selected_action": sid},
        {"action": "revoke_selected", "_selected_action": sid, "post": "yes"},
        {"action": "revoke_users", "user": str(victim.pk), "post": "yes"},
    ):
        assert client.post(REVOKE, post).status_code == 403
    assert sid in listed(client.get(LIST))
    assert not log_entries().exists()


def test_staff_without_the_view_permission_is_refused(engine):
    """Staff without view_activesession get 403; a non-staff user is sent to the admin login."""
    client, _ = browser_of(make_user("clerk"))
    assert client.get(LIST).status_code == 403
    assert client.get(detail_url("A" * 22)).status_code == 403
    outsider, _ = browser_of(make_user("outsider", "view_activesession", staff=False))
    response = outsider.get(LIST)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_revoke_permission_without_data_permission(engine):
    """revoke_activesession shows the actions, yet the data needs view_session_data."""
    staff = make_user("staff", "view_activesession", "revoke_activesession")
    client, own = browser_of(staff)
    assert 'value="revoke_selected"' in client.get(LIST).content.decode()
    assert 'id="session-data"' not in client.get(detail_url(own)).content.decode()


def test_detail_masks_sensitive_values_at_any_depth(root):
    """The decoded data hides values of keys matching MASKED_KEYS, nested ones included."""
    alice = make_user("alice", staff=False)
    sid = session_of(
        alice,
        _auth_user_hash="deadbeefcafe",
        api_token="tok-123456",
        cart={"items": [1, 2], "coupon": "SPRING"},
        profile={"nickname": "al", "Password": "hunter2", "cards": [{"card_number": "4111"}]},
    )
    page = root.get(detail_url(sid)).content.decode()
    assert 'id="session-data"' in page
    for secret in ("deadbeefcafe", "tok-123456", "hunter2", "4111"):
        assert secret not in page
    assert "SPRING" in page
    assert "&quot;nickname&quot;: &quot;al&quot;" in page
    assert page.count("********") >= 4
    items = dict(root.get(detail_url(sid)).context["items"])
    assert items["_auth_user_hash"] == '"********"'
    assert items[SESSION_KEY] == f'"{alice.pk}"'


def test_masked_keys_setting_is_honoured(root, settings):
    """MASKED_KEYS decides what is masked: here "cart" too, and no longer "token"."""
    settings.ELASTIC_SESSIONS = {**settings.ELASTIC_SESSIONS, "MASKED_KEYS": "cart"}
    sid = session_of(make_user("alice", staff=False), cart=["SECRET-CART"], token="visible-tok")
    page = root.get(detail_url(sid)).content.decode()
    assert "SECRET-CART" not in page
    assert "visible-tok" in page


def test_search_by_username_and_by_email(root):
    """q finds users by username or email (case-insensitive) and lists only their sessions."""
    alice = make_user("alice", staff=False, email="al@wonder.example")
    bob = make_user("bob", staff=False, email="robert@builder.example")
    alice_sid, bob_sid = session_of(alice), session_of(bob)
    assert listed(root.get(LIST, {"q": "ALI"})) == [alice_sid]
    assert listed(root.get(LIST, {"q": "builder.exa"})) == [bob_sid]
    nobody = root.get(LIST, {"q": "zzz-nobody"})
    assert listed(nobody) == []
    assert 'id="no-sessions"' in nobody.content.decode()


def test_user_filter_lists_one_users_sessions(root):
    """?user=<id> lists that user's sessions and offers to revoke all of them."""
    alice, bob = make_user("alice", staff=False), make_user("bob", staff=False)
    first, second = session_of(alice), session_of(alice)
    session_of(bob)
    response = root.get(LIST, {"user": str(alice.pk)})
    assert sorted(listed(response)) == sorted([first, second])
    assert 'id="revoke-user"' in response.content.decode()
    # A search and a user filter combine: alice is not among the "bob"s.
    assert listed(root.get(LIST, {"user": str(alice.pk), "q": "bob"})) == []


def test_expiring_and_idle_filters(root):
    """expiring=N lists sessions ending within N seconds; idle=N those unseen for N seconds."""
    alice = make_user("alice", staff=False)
    soon, later = session_of(alice, expiry=600), session_of(alice, expiry=86400)
    assert listed(root.get(LIST, {"expiring": "3600"})) == [soon]
    assert set(listed(root.get(LIST, {"expiring": "100000"}))) >= {soon, later}
    # Every session was just used: none is idle for an hour.
    assert listed(root.get(LIST, {"idle": "3600"})) == []


def test_sorted_by_expiry_both_ways(root):
    """o=expires lists the soonest expiry first, o=-expires the latest first."""
    alice = make_user("alice", staff=False)
    sids = [session_of(alice, expiry=seconds) for seconds in (300, 3000, 30000)]
    by_user = {"user": str(alice.pk)}
    assert listed(root.get(LIST, {**by_user, "o": "expires"})) == sids
    assert listed(root.get(LIST, {**by_user, "o": "-expires"})) == sids[::-1]
    response = root.get(LIST, {**by_user, "o": "expires"})
    assert response.context["page"].order == "expires"


def test_pages_and_their_bounds(root):
    """50 rows a page; a page past the end shows the last one; a bad page number the first."""
    alice = make_user("alice", staff=False)
    for _ in range(54):
        session_of(alice)
    first = root.get(LIST)
    assert len(listed(first)) == 50
    assert first.context["page"].total == 55
    assert 'rel="next"' in first.content.decode()
    second = listed(root.get(LIST, {"p": "2"}))
    assert len(second) == 5
    assert not set(second) & set(listed(first))
    assert listed(root.get(LIST, {"p": "999"})) == second
    for bad in ("abc", "0", "-1", "1e9", "²"):
        assert listed(root.get(LIST, {"p": bad})) == listed(first)


@pytest.mark.parametrize(
    "params",
    [
        {"idle": "-5"},
        {"idle": "abc"},
        {"expiring": "99999999999999999999"},
        {"expiring": "0"},
        {"o": "bogus"},
        {"o": "-"},
        {"q": "x" * 10_000},
        {"q": "%_\\'\""},
        {"user": "'; DROP TABLE auth_user; --"},
        {"user": "9" * 40},
        {"p": "\x00"},
    ],
)
def test_hostile_list_parameters_fall_back_safely(root, params):
    """Malformed list parameters are ignored or match nothing; never a server error."""
    response = root.get(LIST, params)
    assert response.status_code == 200


@pytest.mark.parametrize("sid", ["x", "A" * 22, "A" * 21 + "{", "..%2F..%2Fetc", "a/b"])
def test_detail_of_no_such_session_is_404(root, sid):
    """A storage id of the wrong shape or of no session answers 404."""
    assert root.get(detail_url(sid)).status_code == 404


def test_revoke_selected_confirms_then_ends_and_logs(root):
    """Revoking asks first; once confirmed the session's browser is signed out and a LogEntry
    names the session and its user."""
    alice = make_user("alice", staff=False)
    browser, sid = browser_of(alice)
    keep = session_of(alice)
    ask = root.post(REVOKE, {"action": "revoke_selected", "_selected_action": [sid]})
    assert ask.status_code == 200
    assert 'id="confirm-revoke"' in ask.content.decode()
    assert sid in listed(root.get(LIST))  # nothing ended yet

    done = root.post(
        REVOKE,
        {
            "action": "revoke_selected",
            "_selected_action": [sid],
            "post": "yes",
            "back": "o=expires",
        },
    )
    assert done.status_code == 302
    assert done["Location"] == LIST + "?o=expires"
    assert "Revoked 1 session." in root.get(LIST).content.decode()
    assert sid not in listed(root.get(LIST))
    assert keep in listed(root.get(LIST))
    assert browser.get("/keys/x/").json()["user"] is None

    (entry,) = log_entries().all()
    assert entry.is_deletion()
    assert entry.object_id == sid
    assert "alice" in entry.object_repr
    assert entry.user.username == "root"
    assert entry.content_type == ContentType.objects.get_for_model(ActiveSession)
    assert entry.change_message


def test_revoke_all_sessions_of_the_selected_users(root):
    """The users action ends every session of each selected session's owner, and only theirs."""
    alice, bob = make_user("alice", staff=False), make_user("bob", staff=False)
    alice_sids = [session_of(alice) for _ in range(3)]
    bob_sid = session_of(bob)
    ask = root.post(REVOKE, {"action": "revoke_users", "_selected_action": [alice_sids[0]]})
    assert "alice: 3 sessions" in ask.content.decode()
    assert f'name="user" value="{alice.pk}"' in ask.content.decode()

    root.post(REVOKE, {"action": "revoke_users", "user": [str(alice.pk)], "post": "yes"})
    remaining = listed(root.get(LIST))
    assert not set(alice_sids) & set(remaining)
    assert bob_sid in remaining
    assert set(log_entries().values_list("object_id", flat=True)) == set(alice_sids)
    assert all("alice" in repr_ for repr_ in log_entries().values_list("object_repr", flat=True))


def test_detail_buttons_revoke_the_session_or_the_user(root):
    """The detail page's buttons post the session, or its user, to the confirmation page."""
    alice = make_user("alice", staff=False)
    sid = session_of(alice)
    page = root.get(detail_url(sid)).content.decode()
    assert 'id="revoke-session"' in page
    assert f'name="user" value="{alice.pk}"' in page
    ask = root.post(REVOKE, {"action": "revoke_users", "user": str(alice.pk)})
    assert "alice: 1 session" in ask.content.decode()


def test_revoke_needs_a_selection_and_an_action(root):
    """Nothing selected or no action: a message and nothing ended."""
    sid = session_of(make_user("alice", staff=False))
    for post in ({"action": "revoke_selected"}, {"_selected_action": sid, "post": "yes"}):
        response = root.post(REVOKE, post, follow=True)
        assert response.status_code == 200
        assert sid in listed(response)
    assert not log_entries().exists()


def test_revoke_is_post_only_and_csrf_protected(engine):
    """GET on the revoke URL is 405; a POST without the CSRF token is 403."""
    root = get_user_model().objects.create_superuser("root", "root@example.com", "root")
    sid = session_of(make_user("alice", staff=False))
    client = Client(enforce_csrf_checks=True)
    client.force_login(root)
    assert client.get(REVOKE).status_code == 405
    post = {"action": "revoke_selected", "_selected_action": sid, "post": "yes"}
    assert client.post(REVOKE, post).status_code == 403
    assert sid in listed(client.get(LIST))
    token = client.get(LIST).context["csrf_token"]
    assert client.post(REVOKE, {**post, "csrfmiddlewaretoken": token}).status_code == 302
    assert sid not in listed(client.get(LIST))


def test_revoke_of_ids_of_the_wrong_shape_ends_nothing(root):
    """Hostile ids in a revoke POST are skipped: no error, no log entry."""
    sid = session_of(make_user("alice", staff=False))
    bad = ["x", "A" * 22, "*", "../" * 8]
    response = root.post(REVOKE, {"action": "revoke_selected", "_selected_action": bad})
    assert response.status_code == 200
    response = root.post(
        REVOKE, {"action": "revoke_selected", "_selected_action": bad, "post": "yes"}
    )
    assert response.status_code == 302
    assert not log_entries().exists()
    assert sid in listed(root.get(LIST))


# -- the hybrid engine with Redis down ------------------------------------------------
@pytest.fixture
def hybrid_without_redis(web, redis_factory, use_server):
    """The hybrid engine on a private Redis, which the test kills."""
    server = redis_factory()
    use_server(server, BREAKER_PROBE_INTERVAL=60, SOCKET_TIMEOUT=0.2, RETRIES=0)
    web.SESSION_ENGINE = ENGINES["hybrid"]
    return server


def test_hybrid_admin_works_with_redis_down(hybrid_without_redis):
    """With Redis killed the hybrid engine's list, detail and revoke work from the database."""
    root = get_user_model().objects.create_superuser("root", "root@example.com", "root")
    alice = make_user("alice", staff=False)
    admin_browser, _ = browser_of(root)
    alice_browser, sid = browser_of(alice)
    other = session_of(alice, note="still here")
    hybrid_without_redis.kill()

    assert {sid, other} <= set(listed(admin_browser.get(LIST)))
    assert "still here" in admin_browser.get(detail_url(other)).content.decode()
    post = {"action": "revoke_selected", "_selected_action": sid, "post": "yes"}
    assert admin_browser.post(REVOKE, post).status_code == 302
    assert sid not in listed(admin_browser.get(LIST))
    assert alice_browser.get("/keys/x/").json()["user"] is None
    assert log_entries().get().object_id == sid


def test_redis_engine_with_redis_down_answers_503_not_500(web, redis_factory, use_server):
    """On the redis engine an outage is the middleware's 503 (the admin's own session is
    in Redis too), never a server error."""
    server = redis_factory()
    use_server(server, SOCKET_TIMEOUT=0.2, RETRIES=0)
    web.SESSION_ENGINE = ENGINES["redis"]
    root = get_user_model().objects.create_superuser("root", "root@example.com", "root")
    client, _ = browser_of(root)
    server.kill()
    assert client.get(LIST).status_code == 503


def test_listing_index_off_lists_by_search_only(web, settings, elastic_redis):
    """Without LISTING_INDEX the list says so and still finds a user's sessions by search."""
    web.SESSION_ENGINE = ENGINES["redis"]
    settings.ELASTIC_SESSIONS = {"REDIS_URL": elastic_redis.url, "LISTING_INDEX": False}
    root = Client()
    root.force_login(get_user_model().objects.create_superuser("root", "root@x.example", "root"))
    alice_sid = session_of(make_user("alice", staff=False))
    page = root.get(LIST).content.decode()
    assert 'id="listing-off"' in page
    assert 'id="session-counts"' not in page
    assert listed(root.get(LIST, {"q": "alice"})) == [alice_sid]
