"""Fixtures for tests that drive :class:`tests.load.Load`: a database several threads can
write at once, and the load itself, stopped at teardown.

Used with ``pytest_plugins = ["tests.load_fixtures"]`` and
``pytest.mark.usefixtures("threaded_database")``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections

from .load import Load


@contextmanager
def sqlite_file_as_default(path: Path) -> Iterator[None]:
    """Point the default alias at an SQLite file, for this thread and every new one."""
    old_settings = connections.settings["default"]
    old_connection = connections["default"]
    connections.settings["default"] = {**old_settings, "NAME": str(path)}
    connections["default"] = connections.create_connection("default")
    try:
        yield
    finally:
        connections["default"].close()
        # The old wrapper is put back, not recreated: it holds the in-memory test
        # database open, which would vanish with its last connection.
        connections["default"] = old_connection
        connections.settings["default"] = old_settings


@pytest.fixture(scope="module")
def sqlite_template(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None, django_db_blocker: Any
) -> Path | None:
    """A migrated SQLite file to copy for each test (None on other databases)."""
    if connections["default"].vendor != "sqlite":
        return None
    path = tmp_path_factory.mktemp("sqlite") / "template.sqlite3"
    with django_db_blocker.unblock(), sqlite_file_as_default(path):
        call_command("migrate", verbosity=0, interactive=False)
    return path


@pytest.fixture
def threaded_database(
    sqlite_template: Path | None, transactional_db: None, tmp_path: Path
) -> Iterator[None]:
    """A database that several threads can write at once, as in production.

    pytest-django's SQLite test database lives in memory with a shared cache, where
    SQLite locks whole tables and fails at once ("database table is locked") instead
    of waiting as it does on a file; that would be the test's failure, not the
    engine's.  On SQLite each test gets its own copy of a migrated file instead.
    """
    if sqlite_template is None:
        yield
        return
    path = tmp_path / "sessions.sqlite3"
    shutil.copyfile(sqlite_template, path)
    with sqlite_file_as_default(path):
        yield


@pytest.fixture
def start_load() -> Iterator[Callable[[], Load]]:
    """Start the load; its threads are stopped at teardown even if the test failed."""
    loads: list[Load] = []

    def start() -> Load:
        loads.append(Load().start())
        return loads[-1]

    yield start
    for load in loads:
        load.finish()
