from __future__ import annotations

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "elastic_sessions",
]
MIDDLEWARE = [
    "elastic_sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "tests.urls"
# Under `pytest --database=postgres`, conftest points "default" at a throwaway PostgreSQL.
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
SESSION_ENGINE = "elastic_sessions.backends.redis"
# The redis_server fixture points REDIS_URL at a throwaway server per test run.
ELASTIC_SESSIONS: dict[str, object] = {}
USE_TZ = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
