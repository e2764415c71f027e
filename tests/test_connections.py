"""Every documented way to reach Redis works end to end: TCP, TLS, ACL, unix, django-redis."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from elastic_sessions.backends.redis import SessionStore
from elastic_sessions.connection import get_client
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


def test_acl_wrong_password_is_a_clear_error(acl_server, use_server):
    """A wrong password fails with SessionStoreUnavailable that says authentication failed."""
    use_server(acl_server, USERNAME="sessions", PASSWORD="wrong")
    with pytest.raises(SessionStoreUnavailable, match=r"(?i)auth|password"):
        round_trip()


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
    assert len(server.client().keys("es:*")) == 2


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
    assert first.client().dbsize() == 1
    assert second.client().dbsize() == 1
