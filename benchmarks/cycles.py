"""One request's worth of session work, as Django's ``SessionMiddleware`` does it.

A cycle builds ``SessionStore(cookie_key)``, lets a "view" touch the data, then
runs the session half of ``SessionMiddleware.process_response``: read
``accessed``, ``modified`` and ``is_empty()``, and when the session is modified
(or ``SESSION_SAVE_EVERY_REQUEST`` is on) ask for the cookie age and ``save()``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from .engines import Engine, SessionLike
from .shapes import CHANGED_KEY, READ_KEY

View = Callable[[SessionLike, dict[str, Any], int], None]


def _create(session: SessionLike, data: dict[str, Any], _: int) -> None:
    session.update(data)


def _change(session: SessionLike, _: dict[str, Any], tick: int) -> None:
    session[CHANGED_KEY] = tick


def _read(session: SessionLike, _: dict[str, Any], __: int) -> None:
    session.get(READ_KEY)


@dataclass(frozen=True)
class Cycle:
    name: str
    label: str
    view: View
    save_every_request: bool
    # False: the request carries no cookie and the cycle creates a session.
    loads: bool


CYCLES = {
    cycle.name: cycle
    for cycle in (
        Cycle("create", "create (new session, saved)", _create, False, loads=False),
        Cycle("change", "load + change 1 key + save", _change, False, loads=True),
        Cycle("unchanged", "load + save, unchanged (SAVE_EVERY_REQUEST)", _read, True, loads=True),
        Cycle("load", "load only (read a key, no save)", _read, False, loads=True),
    )
}


def respond(session: SessionLike, save_every_request: bool) -> str | None:
    """The session part of ``SessionMiddleware.process_response`` (Django 5.2)."""
    session.accessed  # noqa: B018 - the middleware reads it for Vary: Cookie
    modified = session.modified
    empty = session.is_empty()
    if (modified or save_every_request) and not empty:
        if not session.get_expire_at_browser_close():
            session.get_expiry_age()  # the cookie's max_age
        session.save()
    return session.session_key


class Workload:
    """One (engine, cycle, data) combination, ready to run many times."""

    def __init__(self, engine: Engine, cycle: Cycle, data: dict[str, Any], admin: redis.Redis):
        self.engine = engine
        self.cycle = cycle
        self.data = data
        self.admin = admin
        # Every "change" writes a value the session has not held before.
        self._ticks = itertools.count(1000)
        self.cookie: str | None = None
        if cycle.loads:
            self.cookie = self.create_session()

    def create_session(self) -> str:
        """Store ``data`` as a new session through the engine; returns its key."""
        session = self.engine.store(None)
        _create(session, self.data, 0)
        key = respond(session, save_every_request=False)
        assert key is not None, f"{self.engine.name} did not create a session"
        return key

    def run(self) -> str | None:
        """One request cycle; returns the session key the response cookie carries."""
        session = self.engine.store(self.cookie)
        self.cycle.view(session, self.data, next(self._ticks))
        return respond(session, self.cycle.save_every_request)

    def after(self, key: str | None) -> None:
        """Untimed upkeep: remove what a create left, so Redis and the database do not grow."""
        if not self.cycle.loads and key is not None:
            self.engine.discard(self.admin, key)

    def check(self, key: str | None) -> None:
        """Fail loudly if a cycle did not do what it claims (before any timing)."""
        name = f"{self.engine.name}/{self.cycle.name}"
        if self.cycle.loads:
            assert key == self.cookie, f"{name}: the session was lost ({key!r})"
            seen = self.engine.store(self.cookie)
            assert seen.get(READ_KEY) == self.data[READ_KEY], f"{name}: data not loaded"
            if self.cycle.name == "change":
                assert seen.get(CHANGED_KEY) >= 1000, f"{name}: the change was not saved"
        else:
            assert key is not None, f"{name}: no session created"
            assert self.engine.store(key).get(READ_KEY) == self.data[READ_KEY], name

    def close(self) -> None:
        if self.cookie is not None:
            self.engine.discard(self.admin, self.cookie)
