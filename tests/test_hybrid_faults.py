"""The hybrid engine under steady load while Redis really fails (issue 3): killed and
restarted empty, restarted with its old data, paused, and starved of memory.

Several threads send requests through Django's test client, each checking what it
reads against what it knows it wrote.  Every scenario must end with no failed
request, no lost write, no stale read and no logout.
"""

from __future__ import annotations

import shutil
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.signing import JSONSerializer
from django.db import connection, connections, transaction
from django.db.models import F
from django.test import Client

from elastic_sessions.backends.hybrid import SessionStore
from elastic_sessions.breaker import BreakerState, CircuitBreaker, breaker_for
from elastic_sessions.codec import META_FIELD, codec_for
from elastic_sessions.keys import storage_id
from elastic_sessions.models import DurableSession
from elastic_sessions.signals import store_degraded, store_recovered
from elastic_sessions.storage.database import DatabaseSessionStorage
from elastic_sessions.storage.hybrid import BREAKER_NAME

from .contract import redis_key_of
from .redis_server import RedisServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.database]

COOKIE = settings.SESSION_COOKIE_NAME
THREADS = 4
PROBE = 0.2
# Each thread changes the session it shares with the others every this many rounds.
SHARED_EVERY = 3


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


@pytest.fixture(autouse=True)
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
def faulty_redis(
    redis_factory: Callable[..., RedisServer], use_server: Callable[..., None], settings: Any
) -> RedisServer:
    """A private server that keeps its data across kill -9 (AOF, fsync always), and
    timeouts short enough that a paused server opens the breaker quickly."""
    server = redis_factory(extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    use_server(
        server,
        BREAKER_PROBE_INTERVAL=PROBE,
        SOCKET_TIMEOUT=0.2,
        SOCKET_CONNECT_TIMEOUT=0.2,
        RETRIES=0,
    )
    settings.SESSION_ENGINE = "elastic_sessions.backends.hybrid"
    return server


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


@pytest.fixture
def transitions() -> Iterator[list[str]]:
    """The breaker's announcements, in order ("degraded", "recovered")."""
    seen: list[str] = []

    def degraded(sender: object, **kwargs: object) -> None:
        if sender is CircuitBreaker:
            seen.append("degraded")

    def recovered(sender: object, **kwargs: object) -> None:
        if sender is CircuitBreaker:
            seen.append("recovered")

    store_degraded.connect(degraded)
    store_recovered.connect(recovered)
    yield seen
    store_degraded.disconnect(degraded)
    store_recovered.disconnect(recovered)


def signed_in(username: str) -> Client:
    client = Client(raise_request_exception=False)
    assert client.get(f"/login/{username}/").status_code == 200
    return client


def with_cookie(key: str) -> Client:
    client = Client(raise_request_exception=False)
    client.cookies[COOKIE] = key
    return client


def durable_values(key: str) -> dict[str, Any] | None:
    """The session's data as the database holds it, decoded; None when it is gone."""
    record = DatabaseSessionStorage().load(storage_id(key))
    if record is None:
        return None
    codec = codec_for(JSONSerializer)
    return dict(codec.decode_item(name, raw) for name, raw in record.fields.items())


@dataclass
class Tally:
    """What went wrong, by kind, with one line of detail per incident."""

    failed: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    logouts: list[str] = field(default_factory=list)
    requests: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "failed": len(self.failed),
            "stale": len(self.stale),
            "lost": len(self.lost),
            "logouts": len(self.logouts),
        }


class Load:
    """THREADS threads, each with its own signed-in session holding a counter ``n``, and
    each also holding a client on one shared session where it owns the key ``s<i>``.

    A thread knows exactly what its own keys hold, so any other value read is stale;
    for the other threads' keys in the shared session, a read must show at least what
    they had acknowledged before it started (a lower value is a lost update).
    """

    def __init__(self) -> None:
        self.tally = Tally()
        # What the main thread is doing to Redis, for the incident reports.
        self.phase = "healthy"
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.own = [signed_in(f"worker{i}") for i in range(THREADS)]
        for client in self.own:
            assert client.get("/set/n/0/").status_code == 200
        self.written = [0] * THREADS
        shared = signed_in("shared")
        self.shared_key = shared.cookies[COOKIE].value
        self.acked = [0] * THREADS
        for i in range(THREADS):
            assert shared.get(f"/set/s{i}/0/").status_code == 200
        self.shared = [with_cookie(self.shared_key) for _ in range(THREADS)]
        self.threads = [
            threading.Thread(target=self._work, args=(i,), name=f"load-{i}", daemon=True)
            for i in range(THREADS)
        ]

    @property
    def own_keys(self) -> list[str]:
        return [client.cookies[COOKIE].value for client in self.own]

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def requests(self) -> int:
        with self.lock:
            return self.tally.requests

    def keep_going(self, seconds: float, *, min_requests: int = 20) -> None:
        """Let the load run for ``seconds``, and at least until ``min_requests`` more
        requests were answered (bounded: a stuck load fails the final checks)."""
        start = self.requests()
        deadline = time.monotonic() + seconds
        hard_deadline = deadline + 5
        while time.monotonic() < hard_deadline and any(t.is_alive() for t in self.threads):
            if time.monotonic() >= deadline and self.requests() - start >= min_requests:
                return
            time.sleep(0.02)

    def finish(self) -> Tally:
        """Stop the threads (also called at teardown, when a test failed early)."""
        self.stop.set()
        for thread in self.threads:
            if thread.ident is not None:
                thread.join(10)
            assert not thread.is_alive(), f"{thread.name} is stuck"
        return self.tally

    # -- what each thread does ------------------------------------------------
    def _note(self, kind: list[str], message: str) -> None:
        with self.lock:
            kind.append(f"[{self.phase}, {threading.current_thread().name}] {message}")

    def _get(self, client: Client, path: str) -> dict[str, Any] | None:
        response = client.get(path)
        with self.lock:
            self.tally.requests += 1
        if response.status_code != 200:
            self._note(self.tally.failed, f"{path}: {response.status_code}")
            return None
        body: dict[str, Any] = response.json()
        if body["user"] is None:
            self._note(self.tally.logouts, f"{path}: signed out")
        return body

    def _work(self, index: int) -> None:
        try:
            rounds = 0
            while not self.stop.is_set():
                self._own_round(index)
                rounds += 1
                if rounds % SHARED_EVERY == 0:
                    self._shared_round(index)
        except Exception:  # a crash is a failed request, with its traceback to read
            self._note(self.tally.failed, f"thread {index} crashed:\n{traceback.format_exc()}")
        finally:
            # Each thread has its own connection; PostgreSQL would keep it open and
            # refuse to drop the test database.
            connections.close_all()

    def _own_round(self, index: int) -> None:
        client, last = self.own[index], self.written[index]
        body = self._get(client, "/keys/n/")
        if body is not None and body["values"]["n"] != str(last):
            self._note(
                self.tally.stale, f"worker{index} read n={body['values']['n']}, wrote {last}"
            )
        body = self._get(client, f"/swap/n/{last + 1}/")
        if body is None:
            # Unknown whether it was written: learn the value back before going on.
            seen = self._get(client, "/keys/n/")
            if seen is not None and seen["values"]["n"] is not None:
                self.written[index] = int(seen["values"]["n"])
            return
        if body["before"] != str(last):
            self._note(self.tally.stale, f"worker{index} swap saw n={body['before']}, wrote {last}")
        self.written[index] = last + 1

    def _shared_round(self, index: int) -> None:
        client = self.shared[index]
        mine = f"s{index}"
        value = self.acked[index] + 1
        body = self._get(client, f"/swap/{mine}/{value}/")
        if body is None:
            seen = self._get(client, f"/keys/{mine}/")
            if seen is not None and seen["values"][mine] is not None:
                with self.lock:
                    self.acked[index] = int(seen["values"][mine])
            return
        if body["before"] != str(value - 1):
            self._note(self.tally.stale, f"shared {mine} was {body['before']}, wrote {value - 1}")
        with self.lock:
            self.acked[index] = value
            floor = list(self.acked)
        names = ",".join(f"s{i}" for i in range(THREADS))
        body = self._get(client, f"/keys/{names}/")
        if body is None:
            return
        for i, at_least in enumerate(floor):
            seen = body["values"][f"s{i}"]
            if seen is None or int(seen) < at_least:
                self._note(self.tally.lost, f"shared s{i} read {seen}, acknowledged {at_least}")

    # -- the end state ----------------------------------------------------------
    def check_durable_state(self) -> None:
        """The database holds every acknowledged write, and everyone is signed in."""
        for index, key in enumerate(self.own_keys):
            values = durable_values(key)
            assert values is not None, f"worker{index}'s session is gone"
            assert values["n"] == str(self.written[index])
            assert values.get("_auth_user_id") is not None
        shared = durable_values(self.shared_key)
        assert shared is not None
        assert [shared[f"s{i}"] for i in range(THREADS)] == [str(v) for v in self.acked]
        assert shared.get("_auth_user_id") is not None

    def check_served_state(self) -> None:
        """Requests read the same values back (from Redis, now that it is trusted)."""
        for index, client in enumerate(self.own):
            body = self._get(client, "/keys/n/")
            assert body is not None
            assert body["values"] == {"n": str(self.written[index])}
        names = ",".join(f"s{i}" for i in range(THREADS))
        body = self._get(self.shared[0], f"/keys/{names}/")
        assert body is not None
        assert body["values"] == {f"s{i}": str(v) for i, v in enumerate(self.acked)}


def sign_out(client: Client) -> int:
    """Log out; on SQLite, retry a logout refused with "database is locked".

    That refusal is a bug of its own, pinned by
    test_a_delete_waits_for_a_concurrent_writer_on_sqlite; retrying here keeps this
    scenario about what it checks (no resurrection).  Other databases get one try.
    """
    status = client.get("/logout/").status_code
    deadline = time.monotonic() + 2
    while status == 503 and connection.vendor == "sqlite" and time.monotonic() < deadline:
        status = client.get("/logout/").status_code
    return status


def assert_clean(tally: Tally) -> None:
    assert tally.counts() == {"failed": 0, "stale": 0, "lost": 0, "logouts": 0}, (
        tally.failed[:5],
        tally.stale[:5],
        tally.lost[:5],
        tally.logouts[:5],
    )


def wait_until_closed(load: Load, timeout: float = 5.0) -> None:
    """Keep the load going until the breaker trusts Redis again (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if breaker_for(BREAKER_NAME).state is BreakerState.CLOSED:
            return
        load.keep_going(0.05, min_requests=0)
    raise AssertionError(f"The breaker did not close within {timeout} s")


def live_copies(server: RedisServer, keys: list[str]) -> int:
    """How many of these sessions Redis holds a live copy of (not a fence)."""
    admin = server.client()
    return sum(admin.hexists(redis_key_of(key), META_FIELD) for key in keys)


# -- scenarios ------------------------------------------------------------------------
def test_kill_9_then_restart_empty_under_load(faulty_redis, transitions, start_load):
    """Redis killed mid-run, then back with nothing: no failure, no lost write, no logout."""
    load = start_load()
    load.keep_going(0.5)
    faulty_redis.kill()
    load.phase = "killed"
    during = load.requests()
    load.keep_going(0.8)
    assert load.requests() - during >= 20  # the outage was served, not waited out
    for path in faulty_redis.datadir.glob("*"):
        if path.is_file():
            path.unlink()
    faulty_redis.start()
    load.phase = "restarted"
    wait_until_closed(load)
    load.phase = "recovered"
    load.keep_going(0.8)
    tally = load.finish()
    assert_clean(tally)
    assert transitions[:2] == ["degraded", "recovered"]
    load.check_durable_state()
    load.check_served_state()
    assert live_copies(faulty_redis, load.own_keys) == THREADS  # Redis is used again


def test_restart_with_old_data_serves_nothing_stale_and_resurrects_nobody(
    faulty_redis, transitions, start_load
):
    """Redis back with copies older than the database: each is dropped before it is
    served, and a session signed out during the outage stays signed out."""
    victim = signed_in("victim")
    assert victim.get("/set/color/blue/").status_code == 200
    victim_key = victim.cookies[COOKIE].value
    load = start_load()
    load.keep_going(0.5)
    assert live_copies(faulty_redis, [*load.own_keys, victim_key]) == THREADS + 1
    faulty_redis.kill()
    load.phase = "killed"
    written_before = list(load.written)
    load.keep_going(0.4)
    assert sign_out(victim) == 200
    # Until every thread has written during the outage (a busy machine may need
    # longer than usual), so every copy in the old data is stale.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(
        after > before for after, before in zip(load.written, written_before, strict=True)
    ):
        load.keep_going(0.2)
    assert all(after > before for after, before in zip(load.written, written_before, strict=True))
    faulty_redis.start()
    load.phase = "restarted"
    old_cookie = with_cookie(victim_key)
    resurrected = []
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        body = old_cookie.get("/keys/color/").json()
        if body != {"values": {"color": None}, "user": None}:
            resurrected.append(body)
        time.sleep(0.02)
    wait_until_closed(load)
    load.phase = "recovered"
    load.keep_going(0.5)
    tally = load.finish()
    assert resurrected == []
    assert_clean(tally)
    assert transitions[:2] == ["degraded", "recovered"]
    load.check_durable_state()
    load.check_served_state()
    assert durable_values(victim_key) is None
    assert live_copies(faulty_redis, [victim_key]) == 0


def test_client_pause_longer_than_the_timeout_under_load(faulty_redis, transitions, start_load):
    """A Redis that stops answering for 1.5 s (CLIENT PAUSE) costs no request anything."""
    admin = faulty_redis.client()
    load = start_load()
    load.keep_going(0.5)
    assert admin.execute_command("CLIENT", "PAUSE", 1500, "ALL") in (True, b"OK")
    load.phase = "paused"
    during = load.requests()
    load.keep_going(1.5)
    assert load.requests() - during >= 20
    wait_until_closed(load)
    load.phase = "recovered"
    load.keep_going(0.8)
    tally = load.finish()
    assert_clean(tally)
    assert transitions[:2] == ["degraded", "recovered"]
    load.check_durable_state()
    load.check_served_state()


@pytest.mark.parametrize(
    "policy",
    [
        "allkeys-lru",
        # Once nothing is left to evict, writes fail (OOM) and the breaker opens and
        # closes again and again; fences get evicted too.
        "volatile-lru",
    ],
)
def test_tiny_maxmemory_with_eviction_under_load(faulty_redis, start_load, policy):
    """With Redis evicting session copies to make room for junk (and, under
    volatile-lru, refusing writes once no copy is left to evict), nothing is lost."""
    admin = faulty_redis.client()
    load = start_load()
    load.keep_going(0.5)
    sessions = {redis_key_of(key).encode() for key in [*load.own_keys, load.shared_key]}
    events = admin.pubsub(ignore_subscribe_messages=True)
    admin.config_set("notify-keyspace-events", "Ee")
    events.subscribe("__keyevent@0__:evicted")
    admin.config_set("maxmemory-policy", policy)
    # Just above what the server uses now: the junk below is what pushes it over.
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + 256 * 1024)
    load.phase = "evicting"
    evicted: list[bytes] = []
    junk = b"x" * 2048
    deadline = time.monotonic() + 1.5
    batch = 0
    while time.monotonic() < deadline:
        with admin.pipeline(transaction=False) as pipe:
            for n in range(50):
                pipe.set(f"junk:{batch}:{n}", junk)
            pipe.execute(raise_on_error=False)  # OOM refusals (volatile-lru) are expected
        batch += 1
        while (message := events.get_message(timeout=0)) is not None:
            evicted.append(message["data"])
    load.keep_going(0.3)
    tally = load.finish()
    events.close()
    admin.config_set("maxmemory", 0)
    # The copies of the very sessions under load went, not only junk.
    assert sessions & set(evicted)
    assert_clean(tally)
    load.check_durable_state()
    load.check_served_state()


# -- the races behind what the load found, one step at a time -------------------------
def saved(**data: object) -> str:
    session = SessionStore()
    session.update(data)
    session.save()
    assert session.session_key is not None
    return session.session_key


def test_a_fallback_write_that_commits_after_the_breaker_closed_is_not_read_stale(
    faulty_redis, use_server
):
    """A write that started during the outage and committed after recovery is what
    the next request reads."""
    use_server(faulty_redis, BREAKER_PROBE_INTERVAL=1.0, SOCKET_TIMEOUT=0.2, RETRIES=0)
    key = saved(a=1)
    faulty_redis.kill()
    assert SessionStore(key)["a"] == 1  # from the database; the breaker opens
    opened = time.monotonic()
    faulty_redis.start()
    paused, release = threading.Event(), threading.Event()

    def hold_the_update(execute, sql, params, many, context):
        # Stands for a slow database: this write's transaction spans the recovery.
        if sql.startswith('UPDATE "elastic_sessions_session"'):
            paused.set()
            release.wait(5)
        return execute(sql, params, many, context)

    def slow_write() -> None:
        try:
            with connection.execute_wrapper(hold_the_update):
                session = SessionStore(key)
                session["a"] = 2
                session.save()  # the breaker is open: the database only
        finally:
            connections.close_all()

    writer = threading.Thread(target=slow_write)
    writer.start()
    try:
        assert paused.wait(5)
        time.sleep(max(0.0, opened + 1.1 - time.monotonic()))
        assert SessionStore(key)["a"] == 1  # the probe: reconciles, closes, copies a=1
        assert breaker_for(BREAKER_NAME).state is BreakerState.CLOSED
    finally:
        release.set()
        writer.join(10)
    assert durable_values(key) is not None and durable_values(key)["a"] == 2  # type: ignore[index]
    assert SessionStore(key)["a"] == 2


def test_a_delete_waits_for_a_concurrent_writer_on_sqlite():
    """On SQLite a logout waits for a concurrent write (the busy timeout) like a save does."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's lock upgrade; PostgreSQL takes row locks")
    key, other = saved(a=1), saved(b=1)
    holding, done = threading.Event(), threading.Event()

    def concurrent_write() -> None:
        try:
            with transaction.atomic():
                DurableSession.objects.filter(pk=storage_id(other)).update(version=F("version"))
                holding.set()
                done.wait(0.5)
        finally:
            connections.close_all()

    writer = threading.Thread(target=concurrent_write)
    writer.start()
    try:
        assert holding.wait(5)
        SessionStore(key).delete()
    finally:
        done.set()
        writer.join(10)
    assert durable_values(key) is None


def test_an_evicted_fence_does_not_let_an_older_snapshot_back(faulty_redis):
    """A read-through that read the database before a write cannot put the older
    state back, even when Redis evicted the write's fence meanwhile."""
    admin = faulty_redis.client()
    key = saved(a=1)
    sid = storage_id(key)
    session = SessionStore(key)
    session["a"] = 2  # loaded from the copy
    admin.delete(redis_key_of(key))  # evicted: the save below leaves a fence
    before_the_write = DatabaseSessionStorage().load(sid)  # a read-through, half done
    assert before_the_write is not None
    session.save()
    assert admin.hkeys(redis_key_of(key)) == [b"\x04"]  # the fence
    admin.delete(redis_key_of(key))  # what allkeys-* or volatile-* eviction does to it
    # The read-through completes, as HybridStorage.load does it: copy, then check
    # the version (the check is what catches a write whose fence was evicted).
    storage = SessionStore.storage
    storage._repopulate(sid, before_the_write, storage.breaker)
    assert SessionStore(key)["a"] == 2
