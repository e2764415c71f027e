"""Every documented way to reach Redis works end to end: TCP, TLS, ACL, unix, django-redis."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import warnings
import weakref

import pytest
from django.core.exceptions import ImproperlyConfigured

from elastic_sessions.backends.redis import SessionStore
from elastic_sessions.connection import get_async_client, get_client, reset_clients
from elastic_sessions.exceptions import SessionStoreUnavailable

from .tls import make_certificates


def round_trip():
    session = SessionStore()
    session["a"] = "ok"
    session.save()
    return SessionStore(session.session_key)["a"]


async def async_round_trip():
    session = SessionStore()
    await session.aset("a", "ok")
    await session.asave()
    return await SessionStore(session.session_key).aget("a")


@pytest.fixture
def tls_server(redis_factory, tmp_path):
    certs = make_certificates(tmp_path)
    return redis_factory(tls=certs), certs


async def test_tls_with_ca_sync_and_async(tls_server, use_server):
    """rediss:// with SSL_CA_CERTS stores and loads sessions, sync and async."""
    server, certs = tls_server
    use_server(server, SSL_CA_CERTS=str(certs["ca"]))
    assert server.url.startswith("rediss://")
    assert round_trip() == "ok"
    assert await async_round_trip() == "ok"


def test_tls_with_client_certificate(tls_server, use_server):
    """A client certificate and key can be presented (mutual TLS)."""
    server, certs = tls_server
    use_server(
        server,
        SSL_CA_CERTS=str(certs["ca"]),
        SSL_CERTFILE=str(certs["client_cert"]),
        SSL_KEYFILE=str(certs["client_key"]),
    )
    assert round_trip() == "ok"


def test_tls_with_unknown_ca_is_refused(tls_server, use_server):
    """Without the CA the server certificate is not trusted: a clear outage error."""
    server, _ = tls_server
    use_server(server)
    with pytest.raises(SessionStoreUnavailable):
        round_trip()


def test_tls_certificate_for_another_host_is_refused_by_default(
    redis_factory, tmp_path, use_server
):
    """A trusted certificate that does not name the host is refused unless told otherwise."""
    certs = make_certificates(tmp_path, server_names=("redis.example",))
    server = redis_factory(tls=certs)
    use_server(server, SSL_CA_CERTS=str(certs["ca"]))
    with pytest.raises(SessionStoreUnavailable, match=r"mismatch, certificate is not valid"):
        round_trip()
    use_server(server, SSL_CA_CERTS=str(certs["ca"]), SSL_CHECK_HOSTNAME=False)
    assert round_trip() == "ok"


@pytest.fixture
def acl_server(redis_factory, tmp_path):
    acl = tmp_path / "users.acl"
    acl.write_text(
        "user default off\nuser sessions on >s3cret ~es:* resetchannels +@all -@dangerous +info\n"
    )
    return redis_factory(acl_file=acl)


async def test_acl_user_from_settings(acl_server, use_server):
    """USERNAME and PASSWORD log in as an ACL user limited to the es:* keys."""
    use_server(acl_server, USERNAME="sessions", PASSWORD="s3cret")
    assert round_trip() == "ok"
    assert await async_round_trip() == "ok"


def test_acl_user_in_url(acl_server, settings):
    """The ACL user and password may also come from the URL."""
    settings.ELASTIC_SESSIONS = {
        "REDIS_URL": f"redis://sessions:s3cret@127.0.0.1:{acl_server.port}/0"
    }
    assert round_trip() == "ok"


def acl_url(server, credentials="", query=""):
    return f"redis://{credentials}127.0.0.1:{server.port}/0{query}"


async def test_password_setting_wins_over_the_url(acl_server, settings):
    """PASSWORD replaces a wrong password in the URL, keeping the URL's user, sync and async."""
    settings.ELASTIC_SESSIONS = {
        "REDIS_URL": acl_url(acl_server, "sessions:stale-password@"),
        "PASSWORD": "s3cret",
    }
    assert round_trip() == "ok"
    assert await async_round_trip() == "ok"


async def test_username_setting_wins_over_the_url(acl_server, settings):
    """USERNAME replaces the URL's user: the connection logs in as the setting's user."""
    settings.ELASTIC_SESSIONS = {
        "REDIS_URL": acl_url(acl_server, "nobody:s3cret@"),
        "USERNAME": "sessions",
    }
    assert get_client().acl_whoami() == "sessions"
    assert await get_async_client().acl_whoami() == "sessions"


def test_settings_win_over_credentials_in_the_query_string(acl_server, settings):
    """USERNAME and PASSWORD also replace ?username= and ?password= in the URL."""
    settings.ELASTIC_SESSIONS = {
        "REDIS_URL": acl_url(acl_server, query="?username=nobody&password=stale"),
        "USERNAME": "sessions",
        "PASSWORD": "s3cret",
    }
    assert round_trip() == "ok"


def test_url_credentials_apply_when_the_settings_are_unset(acl_server, settings):
    """Without USERNAME and PASSWORD the URL's user and password are used, even %-encoded."""
    settings.ELASTIC_SESSIONS = {"REDIS_URL": acl_url(acl_server, "sess%69ons:s3cr%65t@")}
    assert get_client().acl_whoami() == "sessions"


def test_acl_wrong_password_is_a_clear_error(acl_server, use_server):
    """A wrong password fails with SessionStoreUnavailable that says authentication failed."""
    use_server(acl_server, USERNAME="sessions", PASSWORD="wrong")
    with pytest.raises(SessionStoreUnavailable, match=r"(?i)auth|password"):
        round_trip()


async def test_auth_failure_never_shows_a_password(acl_server, settings, caplog):
    """Neither the URL's nor the setting's password appears in the error or the log."""
    settings.ELASTIC_SESSIONS = {
        "REDIS_URL": acl_url(acl_server, "sessions:url-secret-1@"),
        "PASSWORD": "setting-secret-2",
    }
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(SessionStoreUnavailable) as sync_error:
            round_trip()
        with pytest.raises(SessionStoreUnavailable) as async_error:
            await async_round_trip()
    shown = [str(sync_error.value), str(async_error.value), caplog.text]
    assert "authentication" in shown[0].lower()
    assert not [text for text in shown if "secret-1" in text or "secret-2" in text]


async def test_unix_socket(redis_factory, use_server):
    """unix:// URLs connect through the socket, sync and async."""
    server = redis_factory(unix=True)
    use_server(server)
    assert server.url.startswith("unix://")
    assert round_trip() == "ok"
    assert await async_round_trip() == "ok"


async def test_django_redis_cache_alias(redis_factory, settings):
    """CACHE_ALIAS reuses a django-redis cache's connection (and mirrors it for async)."""
    server = redis_factory()
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "sessions": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": server.url,
        },
    }
    settings.ELASTIC_SESSIONS = {"CACHE_ALIAS": "sessions"}
    assert round_trip() == "ok"
    assert await async_round_trip() == "ok"
    assert len(server.client().keys("es:{*}")) == 2


def test_cache_alias_that_is_not_django_redis(settings):
    """A CACHE_ALIAS that is not a django-redis cache is an ImproperlyConfigured naming it."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.ELASTIC_SESSIONS = {"CACHE_ALIAS": "default"}
    with pytest.raises(ImproperlyConfigured, match="CACHE_ALIAS"):
        get_client()


def test_unsupported_url_scheme(settings):
    """A URL with another scheme is an ImproperlyConfigured that lists the valid ones."""
    settings.ELASTIC_SESSIONS = {"REDIS_URL": "http://127.0.0.1:6379"}
    with pytest.raises(ImproperlyConfigured, match="redis://, rediss:// or unix://"):
        get_client()


def test_settings_change_reconnects(redis_factory, use_server):
    """Changing ELASTIC_SESSIONS (override_settings) drops the old pool."""
    first, second = redis_factory(), redis_factory()
    use_server(first)
    round_trip()
    use_server(second)
    round_trip()
    assert len(first.client().keys("es:{*}")) == 1
    assert len(second.client().keys("es:{*}")) == 1


def connections_to(server):
    """How many clients other than this check are connected to ``server``."""
    admin = server.client()
    try:
        me = admin.client_id()
        return sum(1 for client in admin.client_list() if int(client["id"]) != me)
    finally:
        admin.close()


def settled_connections(server, expected=0):
    # The server notices a closed socket on its next event-loop turn: wait for
    # it, then report what it sees (never a timing assertion).
    deadline = time.monotonic() + 5
    while connections_to(server) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return connections_to(server)


def resource_warnings_about(server, caught):
    messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    return [message for message in messages if str(server.port) in message]


async def ping_async_client():
    await get_async_client().ping()


def test_async_client_is_closed_when_its_loop_ends(redis_factory, use_server):
    """asyncio.run() ending disconnects that loop's client: nothing left open, no warning."""
    server = redis_factory()
    use_server(server)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert asyncio.run(async_round_trip()) == "ok"
        assert settled_connections(server) == 0
        gc.collect()
    assert resource_warnings_about(server, caught) == []


async def test_reset_clients_closes_the_async_client_of_the_running_loop(redis_factory, use_server):
    """reset_clients() called inside a loop disconnects that loop's client soon after."""
    server = redis_factory()
    use_server(server)
    await ping_async_client()
    assert connections_to(server) == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        reset_clients()
        deadline = time.monotonic() + 5
        while connections_to(server) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        gc.collect()
    assert connections_to(server) == 0
    assert resource_warnings_about(server, caught) == []


def test_reset_clients_closes_the_async_client_of_an_idle_loop(redis_factory, use_server):
    """reset_clients() between two runs of a loop disconnects its client on that loop."""
    server = redis_factory()
    use_server(server)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(ping_async_client())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            reset_clients()
            assert settled_connections(server) == 0
            gc.collect()
        assert resource_warnings_about(server, caught) == []
    finally:
        loop.close()


def test_reset_clients_lets_a_closed_loop_go(redis_factory, use_server):
    """A loop closed without shutting down its async generators is not kept alive by us.

    Its sockets cannot be closed any more (closing a transport needs its loop),
    so they are dropped; what the garbage collector says about them is ignored.
    """
    server = redis_factory()
    use_server(server)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(ping_async_client())
    loop.close()
    gone = weakref.ref(loop)
    del loop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        reset_clients()
        gc.collect()
    assert gone() is None
    assert settled_connections(server) == 0
