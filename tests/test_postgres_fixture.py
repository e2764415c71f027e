"""The `--database` switch: tests marked `database` run on SQLite, then on a real PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.db import connection, transaction
from django.utils import timezone

pytestmark = pytest.mark.database

# A query only the named engine understands, and how its answer starts.
VERSION_QUERIES = {
    "sqlite": ("SELECT 'SQLite ' || sqlite_version()", "SQLite "),
    "postgresql": ("SELECT version()", "PostgreSQL "),
}


def new_session(key: str, data: str) -> Session:
    return Session(session_key=key, session_data=data, expire_date=timezone.now() + timedelta(1))


@pytest.mark.django_db
def test_default_database_is_the_one_named_by_the_option(database_vendor):
    """The default alias is SQLite by default and PostgreSQL under --database=postgres."""
    assert connection.vendor == database_vendor
    query, answer = VERSION_QUERIES[database_vendor]
    with connection.cursor() as cursor:
        cursor.execute(query)
        (version,) = cursor.fetchone()
    assert version.startswith(answer)


@pytest.mark.django_db(transaction=True)
def test_committed_writes_persist_and_rolled_back_ones_vanish(database_vendor):
    """A committed write reads back; an atomic block that raises leaves no trace."""
    assert connection.vendor == database_vendor
    new_session("kept", "one").save()

    with pytest.raises(RuntimeError), transaction.atomic():
        Session.objects.filter(session_key="kept").update(session_data="two")
        new_session("dropped", "three").save()
        raise RuntimeError("roll back")

    assert dict(Session.objects.values_list("session_key", "session_data")) == {"kept": "one"}


@pytest.mark.django_db(transaction=True)
async def test_async_orm_reads_back_its_writes(database_vendor):
    """The async ORM writes and reads the same database as the sync one."""
    assert connection.vendor == database_vendor
    await new_session("async", "four").asave()

    loaded = await Session.objects.aget(session_key="async")

    assert loaded.session_data == "four"
    assert await Session.objects.acount() == 1
