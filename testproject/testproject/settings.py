"""Settings of the demo site: SQLite for users, Redis for sessions.

Environment variables let tests run it against throwaway stores
(``ELASTIC_SESSIONS_REDIS_URL``, ``DEMO_DATABASE_PATH``) and sign in faster
(``DEMO_FAST_PASSWORD_HASHER``).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# A demo that only ever listens on loopback; never reuse these two in production.
SECRET_KEY = "demo-only-not-secret-elastic-sessions"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    # First, so its registration/login.html wins over any other app's.
    "shop",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "elastic_sessions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # In place of django.contrib.sessions.middleware.SessionMiddleware: answers
    # 503 (keeping the cookie) when Redis is down, and refreshes slid cookies.
    "elastic_sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"
WSGI_APPLICATION = "testproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DATABASE_PATH", str(BASE_DIR / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# DEMO_SESSION_ENGINE=hybrid runs the demo on the hybrid engine (Redis + the
# SQLite database above); the default is the redis engine.
SESSION_ENGINE = {
    "redis": "elastic_sessions.backends.redis",
    "hybrid": "elastic_sessions.backends.hybrid",
}[os.environ.get("DEMO_SESSION_ENGINE", "redis")]
ELASTIC_SESSIONS = {
    "REDIS_URL": os.environ.get("ELASTIC_SESSIONS_REDIS_URL", "redis://127.0.0.1:6379/0"),
}

# The browser tests sign in a dozen times; PBKDF2's deliberate slowness would be
# most of their runtime, and it has nothing to do with sessions.
if os.environ.get("DEMO_FAST_PASSWORD_HASHER"):
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
