"""A load of signed-in users for fault and failover tests, and the tally of what went wrong.

Several threads send requests through Django's test client, each checking what it reads
against what it knows it wrote (tests/test_hybrid_faults.py, tests/test_failover.py).
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.signing import JSONSerializer
from django.db import connections
from django.test import Client

from elastic_sessions.codec import codec_for
from elastic_sessions.keys import storage_id
from elastic_sessions.storage.database import DatabaseSessionStorage

COOKIE = settings.SESSION_COOKIE_NAME
THREADS = 4
# Each thread changes the session it shares with the others every this many rounds.
SHARED_EVERY = 3


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
    # Every request: when it was sent and answered (time.monotonic()), and its status.
    timeline: list[tuple[float, float, int]] = field(default_factory=list)

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
        # A write that failed, whose value could not be read back either: it may have
        # been applied, so reading it later is no incident (label -> value).
        self.unsure: dict[str, int] = {}
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
        sent = time.monotonic()
        response = client.get(path)
        with self.lock:
            self.tally.requests += 1
            self.tally.timeline.append((sent, time.monotonic(), response.status_code))
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

    def _mismatch(
        self, kind: list[str], label: str, seen: str | None, expected: int, message: str
    ) -> None:
        """A read showed ``seen`` where ``expected`` was acknowledged; note it in ``kind``.

        Failover tests override this to tell writes Redis lost in its replication
        window from anything else.
        """
        self._note(kind, message)

    def _unsure(self, label: str, seen: str | None) -> bool:
        """Whether ``seen`` is the value of a write whose outcome was never learned."""
        return seen is not None and self.unsure.pop(label, None) == int(seen)

    def _own_round(self, index: int) -> None:
        client, last, label = self.own[index], self.written[index], f"worker{index}"
        body = self._get(client, "/keys/n/")
        if body is not None and body["values"]["n"] != str(last):
            seen = body["values"]["n"]
            if self._unsure(label, seen):
                self.written[index] = last = int(seen)
            else:
                self._mismatch(
                    self.tally.stale, label, seen, last, f"{label} read n={seen}, wrote {last}"
                )
        body = self._get(client, f"/swap/n/{last + 1}/")
        if body is None:
            # Unknown whether it was written: learn the value back before going on.
            seen = self._get(client, "/keys/n/")
            if seen is not None and seen["values"]["n"] is not None:
                self.written[index] = int(seen["values"]["n"])
            elif seen is None:
                self.unsure[label] = last + 1
            return
        if body["before"] != str(last):
            seen = body["before"]
            self._mismatch(
                self.tally.stale, label, seen, last, f"{label} swap saw n={seen}, wrote {last}"
            )
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
            elif seen is None:
                self.unsure[mine] = value
            return
        before = body["before"]
        if before != str(value - 1) and not self._unsure(mine, before):
            self._mismatch(
                self.tally.stale,
                mine,
                before,
                value - 1,
                f"shared {mine} was {before}, wrote {value - 1}",
            )
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
                self._mismatch(
                    self.tally.lost,
                    f"s{i}",
                    seen,
                    at_least,
                    f"shared s{i} read {seen}, acknowledged {at_least}",
                )

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


def assert_clean(tally: Tally) -> None:
    assert tally.counts() == {"failed": 0, "stale": 0, "lost": 0, "logouts": 0}, (
        tally.failed[:5],
        tally.stale[:5],
        tally.lost[:5],
        tally.logouts[:5],
    )


def fill_until_evicting(admin: Any, load: Any, policy: str, prefix: str) -> list[bytes]:
    """Cap ``admin``'s server just above its memory under ``policy`` and write junk
    under ``prefix`` for 1.5 s while ``load`` runs; returns the keys Redis evicted."""
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
                pipe.set(f"{prefix}:{batch}:{n}", junk)
            pipe.execute(raise_on_error=False)  # OOM refusals (volatile-lru) are expected
        batch += 1
        while (message := events.get_message(timeout=0)) is not None:
            evicted.append(message["data"])
    load.keep_going(0.3)
    events.close()
    return evicted
