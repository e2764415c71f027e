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
        ({"CLUSTER": True, "SENTINELS": ["127.0.0.1:26379"]}, checks.E009),
        ({"CLUSTER": True, "REDIS_URL": "redis://127.0.0.1:7000/3"}, checks.E009),
        ({"SENTINELS": ["no-port"]}, checks.E005),
        ({"CLUSTER_NODES": "127.0.0.1:7000"}, checks.E005),
        ({"SENTINEL_SERVICE": ""}, checks.E005),
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


# -- deploy checks of the session cookie (check --deploy) ----------------------
def deploy_ids():
    """The ids `manage.py check --deploy --tag security` would report."""
    from django.core.checks import Tags, run_checks

    return ids(run_checks(include_deployment_checks=True, tags=[Tags.security]))


@pytest.fixture
def production(settings):
    """Our engine, installed as docs/installation.md says, with a production cookie."""
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "django.contrib.sessions"]
    settings.SESSION_COOKIE_SECURE = True
    settings.SESSION_COOKIE_HTTPONLY = True
    settings.SESSION_COOKIE_SAMESITE = "Lax"
    return settings


@pytest.mark.parametrize(
    "cookie",
    [
        {"SESSION_COOKIE_SAMESITE": "Strict"},
        {"SESSION_COOKIE_SAMESITE": "None"},
        {"SESSION_COOKIE_NAME": "__Host-sessionid"},
        {"SESSION_COOKIE_NAME": "__Secure-sessionid", "SESSION_COOKIE_DOMAIN": ".example.com"},
    ],
)
def test_production_cookie_passes_the_deploy_check(production, cookie):
    """A Secure, HttpOnly, SameSite cookie whose name prefix holds raises nothing."""
    for name, value in cookie.items():
        setattr(production, name, value)
    assert checks.check_session_cookie() == []
    assert not [i for i in deploy_ids() if i.startswith("elastic_sessions.")]


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        ({"SESSION_COOKIE_SECURE": False}, checks.W004),
        ({"SESSION_COOKIE_HTTPONLY": False}, checks.W005),
        ({"SESSION_COOKIE_SAMESITE": None}, checks.W006),
        ({"SESSION_COOKIE_SAMESITE": False}, checks.W006),
        ({"SESSION_COOKIE_SAMESITE": "None", "SESSION_COOKIE_SECURE": False}, checks.W007),
        ({"SESSION_COOKIE_SAMESITE": "none", "SESSION_COOKIE_SECURE": False}, checks.W007),
        ({"SESSION_COOKIE_NAME": "__Secure-sid", "SESSION_COOKIE_SECURE": False}, checks.W008),
        (
            {"SESSION_COOKIE_NAME": "__Host-sid", "SESSION_COOKIE_DOMAIN": ".example.com"},
            checks.W008,
        ),
        ({"SESSION_COOKIE_NAME": "__host-sid", "SESSION_COOKIE_PATH": "/app/"}, checks.W008),
    ],
)
def test_each_cookie_problem_has_its_id(production, cookie, expected):
    """Each weakness of the session cookie is reported once, under its own id, on deploy."""
    for name, value in cookie.items():
        setattr(production, name, value)
    found = deploy_ids()
    assert found.count(expected) == 1
    # Django's own session cookie checks stay silent for this installation.
    assert not {"security.W010", "security.W012", "security.W013", "security.W015"} & set(found)


def test_cookie_prefix_hint_names_each_setting_to_change(production):
    """W008's hint lists every setting the __Host- prefix needs changed."""
    production.SESSION_COOKIE_NAME = "__Host-sid"
    production.SESSION_COOKIE_SECURE = False
    production.SESSION_COOKIE_DOMAIN = ".example.com"
    production.SESSION_COOKIE_PATH = "/app/"
    (warning,) = [m for m in checks.check_session_cookie() if m.id == checks.W008]
    assert str(warning.hint).startswith(
        'Set SESSION_COOKIE_SECURE = True, SESSION_COOKIE_DOMAIN = None, SESSION_COOKIE_PATH = "/"'
    )


def test_cookie_checks_defer_to_djangos_own(production):
    """With django.contrib.sessions installed, Django's W012/W015 report Secure and HttpOnly
    and ours stay silent, so each problem is reported once."""
    production.INSTALLED_APPS = [*production.INSTALLED_APPS, "django.contrib.sessions"]
    production.MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
    production.SESSION_COOKIE_SECURE = False
    production.SESSION_COOKIE_HTTPONLY = False
    found = deploy_ids()
    assert {"security.W012", "security.W015"} <= set(found)
    assert checks.W004 not in found
    assert checks.W005 not in found


def test_cookie_checks_ignore_other_engines(production):
    """With Django's own engine configured, the cookie checks leave it to Django."""
    production.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    production.SESSION_COOKIE_SECURE = False
    production.SESSION_COOKIE_SAMESITE = None
    assert checks.check_session_cookie() == []


def test_manage_py_check_reports_cookie_problems_only_on_deploy(production):
    """`manage.py check --deploy` prints the cookie warnings; plain `check` does not."""
    from io import StringIO

    production.SESSION_COOKIE_SECURE = False
    production.SESSION_COOKIE_SAMESITE = None
    plain, deploy = StringIO(), StringIO()
    call_command("check", stdout=plain, stderr=plain)
    call_command("check", "--deploy", stdout=deploy, stderr=deploy)
    assert checks.W004 not in plain.getvalue()
    assert checks.W004 in deploy.getvalue()
    assert checks.W006 in deploy.getvalue()
    assert "SESSION_COOKIE_SECURE = True" in deploy.getvalue()
