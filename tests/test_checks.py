"""Each system check id fires for its problem, and the defaults pass."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from elastic_sessions import checks


def ids(messages):
    return [message.id for message in messages]


def run_all():
    return checks.check_settings() + checks.check_engine_and_middleware()


def test_defaults_pass(settings):
    """The test settings (engine, middleware, a REDIS_URL) raise nothing."""
    assert run_all() == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("redis://x", checks.E001),
        ({"REDIS_ULR": "redis://h"}, checks.E002),
        ({"URL": "redis://h"}, checks.E003),
        ({"REDIS_URL": "http://h:1"}, checks.E004),
        ({"REDIS_URL": "redis://h:notaport"}, checks.E004),
        ({"REDIS_URL": "unix://"}, checks.E004),
        ({"REDIS_URL": 6379}, checks.E004),
        ({"SOCKET_TIMEOUT": -1}, checks.E005),
        ({"ABSOLUTE_TIMEOUT": "30d"}, checks.E005),
        ({"SSL_CERT_REQS": "maybe"}, checks.E005),
        ({"SSL_CHECK_HOSTNAME": "yes"}, checks.E005),
        ({"COMPRESS_MIN_BYTES": -1}, checks.E005),
        ({"KEY_PREFIX": ""}, checks.E005),
        ({"KEY_PREFIX": "es{x}"}, checks.E006),
        ({"CACHE_ALIAS": "nope"}, checks.E007),
        ({"IP_LOCATOR": "tests.no_such_module.locate"}, checks.E008),
        ({"IP_LOCATOR": "elastic_sessions.conf.DEFAULTS"}, checks.E008),
        ({"IP_LOCATOR": 3}, checks.E005),
        ({"PROXY_COUNT": -1}, checks.E005),
        ({"MASKED_KEYS": "pass("}, checks.E005),
        ({"ABSOLUTE_TIMEOUT": 60}, checks.W002),
        ({"REDIS_URL": "redis://h", "SSL_CA_CERTS": "/ca.pem"}, checks.W003),
    ],
)
def test_each_problem_has_its_id(settings, value, expected):
    """A misconfiguration is reported under its own stable id."""
    settings.ELASTIC_SESSIONS = value
    assert expected in ids(run_all())


def test_unknown_key_suggests_the_closest(settings):
    """An unknown key's hint names the key that was probably meant."""
    settings.ELASTIC_SESSIONS = {"REDIS_ULR": "redis://h"}
    (error,) = checks.check_settings()
    assert "Did you mean 'REDIS_URL'?" in str(error.hint)


def test_django_session_middleware_with_our_engine_warns(settings):
    """Our engine behind Django's own SessionMiddleware gets W001 with the fix."""
    settings.MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
    (warning,) = checks.check_engine_and_middleware()
    assert warning.id == checks.W001
    assert "elastic_sessions.middleware.SessionMiddleware" in str(warning.hint)


def test_manage_py_check_fails_on_errors(settings):
    """manage.py check exits with an error for a broken ELASTIC_SESSIONS."""
    settings.ELASTIC_SESSIONS = {"REDIS_URL": "http://nowhere"}
    with pytest.raises(SystemCheckError, match=r"elastic_sessions\.E004"):
        call_command("check")


def test_secrets_never_appear_in_messages(settings):
    """Check messages never echo the password of a URL."""
    settings.ELASTIC_SESSIONS = {"REDIS_URL": "redis://user:hunter2@h:bad/0"}
    text = " ".join(f"{m.msg} {m.hint}" for m in run_all())
    assert "hunter2" not in text


def test_engine_without_the_app_is_refused(settings):
    """Importing an engine while the app is not installed raises ImproperlyConfigured."""
    from django.apps import apps
    from django.core.exceptions import ImproperlyConfigured

    from elastic_sessions.backends.base import require_app_installed

    apps.set_installed_apps([a for a in settings.INSTALLED_APPS if a != "elastic_sessions"])
    try:
        with pytest.raises(ImproperlyConfigured, match="INSTALLED_APPS"):
            require_app_installed()
    finally:
        apps.unset_installed_apps()
