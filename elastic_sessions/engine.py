"""The storage of the configured engine, for code that works on the store itself
(the API, the stats) rather than through one request's session."""

from __future__ import annotations

from importlib import import_module

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .storage.hybrid import HybridStorage
from .storage.redis import RedisSessionStorage


def configured_storage(needed_by: str) -> RedisSessionStorage | HybridStorage:
    """The storage of ``settings.SESSION_ENGINE``; ImproperlyConfigured, naming
    ``needed_by``, when that engine is not one of ours."""
    engine = import_module(settings.SESSION_ENGINE)
    storage = getattr(getattr(engine, "SessionStore", None), "storage", None)
    if not isinstance(storage, RedisSessionStorage | HybridStorage):
        raise ImproperlyConfigured(
            f"{needed_by} needs SESSION_ENGINE to be one of the elastic engines, "
            f"not {settings.SESSION_ENGINE!r}."
        )
    return storage
