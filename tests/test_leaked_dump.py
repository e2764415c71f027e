"""A leaked Redis dump or database backup yields no usable cookie and, with
encryption on, no readable session data: everything stored is dumped and searched."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client

from elastic_sessions.models import DurableSession, DurableSessionField, RedisInvalidation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.database]

KEY = "dump-test-key-" + "k" * 40
SECRETS = ["correct-horse-battery-staple", "victim@mail.example", "4111111111111111"]


def redis_dump(r) -> bytes:
    """Every byte Redis holds: each key's name and its contents, whatever the type,
    and its DUMP serialization."""
    chunks: list[bytes] = []
    for key in r.scan_iter(count=1000):
        chunks += [key, r.dump(key) or b""]
        kind = r.type(key)
        if kind == b"hash":
            for name, value in r.hgetall(key).items():
                chunks += [name, value]
        elif kind == b"zset":
            chunks += [member for member, _ in r.zrange(key, 0, -1, withscores=True)]
        elif kind == b"string":
            chunks.append(r.get(key))
        else:  # the package writes no other type
            pytest.fail(f"unexpected key type {kind!r} for {key!r}")
    return b"\n".join(chunks)


def database_dump() -> bytes:
    """Every row of the package's tables, every column, as bytes."""
    chunks: list[bytes] = []
    for model in (DurableSession, DurableSessionField, RedisInvalidation):
        table = connection.ops.quote_name(model._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT * FROM {table}")
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, (bytes, memoryview)):
                        chunks.append(bytes(value))
                    else:
                        chunks.append(str(value).encode())
    return b"\n".join(chunks)


def sign_in_and_fill(username: str) -> str:
    client = Client()
    client.get(f"/login/{username}/")
    for index, secret in enumerate(SECRETS):
        assert client.get(f"/set/secret{index}/{secret}/").status_code == 200
    return client.cookies["sessionid"].value


@pytest.fixture(params=["redis", "hybrid"])
def engine(request, settings):
    settings.SESSION_ENGINE = f"elastic_sessions.backends.{request.param}"
    return request.param


@pytest.mark.parametrize("encryption", [True, False])
def test_dumps_hold_no_cookie_and_no_plaintext_when_encrypted(
    engine, encryption, settings, elastic_redis
):
    """No cookie value is anywhere; the known plaintext is only there without encryption."""
    keys = [KEY] if encryption else []
    settings.ELASTIC_SESSIONS = {"REDIS_URL": elastic_redis.url, "ENCRYPTION_KEYS": keys}
    cookies = [sign_in_and_fill(name) for name in ("alice", "bob", "carol")]
    dumps = {"redis": redis_dump(elastic_redis.client()), "database": database_dump()}
    assert dumps["redis"], "the Redis dump is empty: nothing was searched"
    if engine == "hybrid":
        assert dumps["database"], "the database dump is empty: nothing was searched"
    for where, dump in dumps.items():
        for cookie in cookies:
            assert cookie.encode() not in dump, f"a session cookie is readable in {where}"
        for secret in SECRETS:
            found = secret.encode() in dump
            if encryption:
                assert not found, f"{secret!r} is readable in the {where} dump"
            elif where == "redis" or engine == "hybrid":
                # The control: without encryption the same search finds it.
                assert found, f"{secret!r} should be in the {where} dump without encryption"
