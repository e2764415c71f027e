"""The circuit breaker: one probe per interval, reconcile before closing, announced transitions."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from elastic_sessions import checks
from elastic_sessions.breaker import BreakerState, CircuitBreaker, breaker_for
from elastic_sessions.exceptions import SessionStoreUnavailable
from elastic_sessions.signals import store_degraded, store_recovered

INTERVAL = 2.0
OUTAGE = SessionStoreUnavailable("Redis could not load a session: ConnectionError: refused")


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker("redis", probe_interval=INTERVAL, probe_timeout=30.0, clock=clock)


@pytest.fixture
def sent() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every store_degraded / store_recovered sent during the test, in order."""
    received: list[tuple[str, dict[str, Any]]] = []

    def on_degraded(sender: object, **kwargs: Any) -> None:
        received.append(("degraded", {"sender": sender, **kwargs}))

    def on_recovered(sender: object, **kwargs: Any) -> None:
        received.append(("recovered", {"sender": sender, **kwargs}))

    store_degraded.connect(on_degraded)
    store_recovered.connect(on_recovered)
    yield received
    store_degraded.disconnect(on_degraded)
    store_recovered.disconnect(on_recovered)


def open_and_probe(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """Fail once, wait the interval and take the probe: the breaker is half-open."""
    breaker.record_failure(OUTAGE)
    clock.advance(INTERVAL)
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN


# States and the probe


def test_closed_breaker_allows_everyone(breaker):
    """A new breaker is closed, lets every caller through and has no opening time."""
    assert [breaker.allow() for _ in range(5)] == [True] * 5
    assert breaker.state is BreakerState.CLOSED
    assert breaker.opened_at is None
    assert breaker.record_success()


def test_first_failure_opens(breaker, clock):
    """One failure opens the breaker at once: callers stop waiting on the store."""
    breaker.record_failure(OUTAGE)
    assert breaker.state is BreakerState.OPEN
    assert breaker.opened_at == clock.now
    assert not breaker.allow()


def test_one_probe_after_the_interval(breaker, clock):
    """Only once the interval has passed does allow() say yes, and to one caller only."""
    breaker.record_failure(OUTAGE)
    clock.advance(INTERVAL - 0.001)
    assert not breaker.allow()
    clock.advance(0.001)
    assert [breaker.allow() for _ in range(10)] == [True] + [False] * 9
    assert breaker.state is BreakerState.HALF_OPEN


class YieldingClock(FakeClock):
    """A fake clock that hands the GIL to another thread on every read, widening races."""

    def __call__(self) -> float:
        time.sleep(0.0001)
        return self.now


def test_sixteen_threads_get_exactly_one_probe():
    """Callers racing on many threads get one probe between them, not one each."""
    clock = YieldingClock()
    breaker = CircuitBreaker("redis", probe_interval=INTERVAL, clock=clock)
    breaker.record_failure(OUTAGE)
    clock.advance(INTERVAL)
    start = threading.Barrier(16)
    answers: list[bool] = []
    answers_lock = threading.Lock()

    def race() -> None:
        start.wait()
        mine = [breaker.allow() for _ in range(20)]
        with answers_lock:
            answers.extend(mine)

    threads = [threading.Thread(target=race) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 16 * 20
    assert answers.count(True) == 1


def test_failed_probe_waits_a_full_interval_again(breaker, clock):
    """A failed probe reopens the breaker, and the next probe waits a whole interval from then."""
    open_and_probe(breaker, clock)
    clock.advance(1.5)  # the probe itself took a while to fail
    breaker.record_failure(OUTAGE)
    assert breaker.state is BreakerState.OPEN
    clock.advance(INTERVAL - 0.001)
    assert not breaker.allow()
    clock.advance(0.001)
    assert breaker.allow()


def test_successful_probe_closes(breaker, clock):
    """A probe that succeeds closes the breaker: everyone uses the store again."""
    open_and_probe(breaker, clock)
    assert breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.opened_at is None
    assert [breaker.allow() for _ in range(3)] == [True] * 3


def test_before_close_runs_once_while_still_half_open(breaker, clock):
    """before_close runs before anyone trusts the store again, and only for the first success."""
    open_and_probe(breaker, clock)
    seen: list[tuple[BreakerState, bool]] = []

    def reconcile() -> None:
        # A second success reported while reconciling must neither close nor reconcile.
        seen.append((breaker.state, breaker.allow()))
        assert not breaker.record_success(before_close=reconcile)

    assert breaker.record_success(before_close=reconcile)
    assert seen == [(BreakerState.HALF_OPEN, False)]
    assert breaker.state is BreakerState.CLOSED


def test_failing_before_close_keeps_the_breaker_open(breaker, clock, sent):
    """A reconcile that fails counts as a failed probe: open for another full interval."""
    open_and_probe(breaker, clock)

    def reconcile() -> None:
        raise SessionStoreUnavailable("Redis could not reconcile: TimeoutError: timed out")

    assert not breaker.record_success(before_close=reconcile)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    clock.advance(INTERVAL)
    assert breaker.allow()
    assert [kind for kind, _ in sent] == ["degraded"]


def test_buggy_before_close_is_logged_with_its_traceback(breaker, clock, caplog):
    """A reconcile that raises a non-outage error logs an ERROR with the traceback, stays open."""
    open_and_probe(breaker, clock)

    def reconcile() -> None:
        raise ValueError("bad row")

    with caplog.at_level(logging.DEBUG, logger="elastic_sessions.breaker"):
        assert not breaker.record_success(before_close=reconcile)
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "ValueError: bad row" in record.getMessage()
    assert record.exc_info is not None
    assert breaker.state is BreakerState.OPEN


def test_cancelled_before_close_lets_the_next_caller_probe(breaker, clock):
    """A reconcile cancelled midway is no verdict on the store: the next caller probes at once."""
    open_and_probe(breaker, clock)

    def reconcile() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        breaker.record_success(before_close=reconcile)
    assert breaker.state is BreakerState.OPEN
    assert breaker.allow()


def test_failure_reported_during_before_close_voids_the_close(breaker, clock, sent):
    """If the store fails for another caller while the probe reconciles, the breaker stays open."""
    open_and_probe(breaker, clock)
    assert not breaker.record_success(before_close=lambda: breaker.record_failure(OUTAGE))
    assert breaker.state is BreakerState.OPEN
    assert [kind for kind, _ in sent] == ["degraded"]


def test_late_reports_while_open_change_nothing(breaker, clock):
    """Reports of calls started before the breaker opened neither close it nor delay the probe."""
    breaker.record_failure(OUTAGE)
    clock.advance(1.0)
    breaker.record_failure(OUTAGE)
    assert not breaker.record_success()
    assert breaker.state is BreakerState.OPEN
    clock.advance(INTERVAL - 1.0)
    assert breaker.allow()


def test_a_lost_probe_is_replaced_after_the_probe_timeout(breaker, clock):
    """A probe that never reports does not wedge the breaker: after probe_timeout, one more."""
    open_and_probe(breaker, clock)
    clock.advance(29.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()
    assert not breaker.allow()


def test_reset_closes_silently(breaker, clock, sent):
    """reset() closes an open breaker without a signal, and voids a reconcile in flight."""
    open_and_probe(breaker, clock)
    assert not breaker.record_success(before_close=breaker.reset)
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure(OUTAGE)
    breaker.reset()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    assert [kind for kind, _ in sent] == ["degraded", "degraded"]


def test_interval_must_be_positive(clock):
    """A breaker with no interval would probe on every request: refused."""
    with pytest.raises(ValueError, match="positive"):
        CircuitBreaker("redis", probe_interval=0, clock=clock)


# Signals and log lines


def test_signals_are_sent_once_per_transition(breaker, clock, sent):
    """One store_degraded when it opens, one store_recovered when it closes, nothing between."""
    breaker.record_failure(OUTAGE)
    breaker.record_failure(OUTAGE)
    for _ in range(3):  # three failed probes
        clock.advance(INTERVAL)
        assert breaker.allow()
        breaker.record_failure(OUTAGE)
    clock.advance(INTERVAL)
    assert breaker.allow()
    assert breaker.record_success()
    assert breaker.record_success()
    assert sent == [
        ("degraded", {"sender": CircuitBreaker, "signal": store_degraded, "name": "redis",
                      "error": OUTAGE}),
        ("recovered", {"sender": CircuitBreaker, "signal": store_recovered, "name": "redis",
                       "downtime": 4 * INTERVAL}),
    ]  # fmt: skip


def test_log_levels(breaker, clock, caplog):
    """Opening logs a WARNING naming the error, a failed probe DEBUG, recovery INFO."""
    with caplog.at_level(logging.DEBUG, logger="elastic_sessions.breaker"):
        breaker.record_failure(redis.exceptions.ConnectionError("Error 111 connecting."))
        clock.advance(INTERVAL)
        breaker.allow()
        breaker.record_failure(OUTAGE)
        clock.advance(INTERVAL)
        breaker.allow()
        breaker.record_success()
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in records] == ["WARNING", "DEBUG", "INFO"]
    opened = records[0][1]
    assert "Session store redis unavailable (ConnectionError: Error 111 connecting.)" in opened
    assert "every 2.0 s" in opened
    assert records[2][1] == "Session store redis recovered after 4.0 s."


def test_log_lines_never_hold_the_password(breaker, caplog, settings):
    """An error message that echoes the Redis password is logged with the password masked."""
    settings.ELASTIC_SESSIONS = {**settings.ELASTIC_SESSIONS, "PASSWORD": "hunter2"}
    with caplog.at_level(logging.DEBUG, logger="elastic_sessions.breaker"):
        breaker.record_failure(redis.exceptions.AuthenticationError("AUTH hunter2 refused"))
    assert "AUTH *** refused" in caplog.text
    assert "hunter2" not in caplog.text


async def test_async_twins_reconcile_and_send_with_asend(breaker, clock, sent):
    """arecord_failure / arecord_success behave as the sync ones, awaiting an async before_close."""
    received_async: list[str] = []

    async def on_recovered(sender: object, **kwargs: Any) -> None:
        received_async.append(kwargs["name"])

    store_recovered.connect(on_recovered)
    try:
        await breaker.arecord_failure(OUTAGE)
        await breaker.arecord_failure(OUTAGE)
        clock.advance(INTERVAL)
        assert breaker.allow()
        reconciled: list[BreakerState] = []

        async def reconcile() -> None:
            await asyncio.sleep(0)
            reconciled.append(breaker.state)

        assert await breaker.arecord_success(before_close=reconcile)
    finally:
        store_recovered.disconnect(on_recovered)
    assert reconciled == [BreakerState.HALF_OPEN]
    assert breaker.state is BreakerState.CLOSED
    assert [kind for kind, _ in sent] == ["degraded", "recovered"]
    assert received_async == ["redis"]


async def test_async_failing_before_close_keeps_it_open(breaker, clock):
    """An async reconcile that fails keeps the breaker open, as the sync one does."""
    open_and_probe(breaker, clock)

    async def reconcile() -> None:
        raise SessionStoreUnavailable("Redis could not reconcile: TimeoutError")

    assert not await breaker.arecord_success(before_close=reconcile)
    assert breaker.state is BreakerState.OPEN


# The per-process registry and the setting


def test_registry_shares_one_breaker_per_name(settings):
    """breaker_for() returns the same breaker for a name, another for another name."""
    settings.ELASTIC_SESSIONS = {**settings.ELASTIC_SESSIONS, "BREAKER_PROBE_INTERVAL": 0.5}
    first = breaker_for("redis")
    assert breaker_for("redis") is first
    assert breaker_for("other") is not first
    assert first.probe_interval == 0.5


def test_registry_is_rebuilt_after_a_settings_change(settings):
    """Changing ELASTIC_SESSIONS gives a fresh, closed breaker with the new interval."""
    old = breaker_for("redis")
    old.record_failure(OUTAGE)
    settings.ELASTIC_SESSIONS = {**settings.ELASTIC_SESSIONS, "BREAKER_PROBE_INTERVAL": 7}
    new = breaker_for("redis")
    assert new is not old
    assert new.state is BreakerState.CLOSED
    assert new.probe_interval == 7.0


def test_registry_is_rebuilt_in_a_forked_child(monkeypatch):
    """A child process does not inherit its parent's breakers: it has its own connections."""
    parent = breaker_for("redis")
    monkeypatch.setattr(os, "getpid", lambda: -1)
    assert breaker_for("redis") is not parent


def test_registry_gives_one_breaker_to_racing_threads():
    """Threads asking for a new name at once all get the same breaker."""
    start = threading.Barrier(16)
    got: list[CircuitBreaker] = []

    def ask() -> None:
        start.wait()
        got.append(breaker_for("racing"))

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(b) for b in got}) == 1


@pytest.mark.parametrize("value", [0, -1, "2s", True, None])
def test_bad_probe_interval_fails_e005(settings, value):
    """BREAKER_PROBE_INTERVAL must be a positive number of seconds (elastic_sessions.E005)."""
    settings.ELASTIC_SESSIONS = {"BREAKER_PROBE_INTERVAL": value}
    errors = [m for m in checks.check_settings() if m.id == checks.E005]
    assert any("BREAKER_PROBE_INTERVAL" in str(m.msg) for m in errors)


def test_default_probe_interval_passes_the_checks(settings):
    """The default interval, and a fractional one, raise no check message."""
    settings.ELASTIC_SESSIONS = {"BREAKER_PROBE_INTERVAL": 0.25}
    assert checks.check_settings() == []
    settings.ELASTIC_SESSIONS = {}
    assert breaker_for("redis").probe_interval == 2.0


# A real Redis


def counting_client(port: int) -> tuple[redis.Redis, list[int]]:
    """A client that makes no retries and counts each real connection attempt."""
    attempts: list[int] = []

    class CountingConnection(redis.Connection):
        def _connect(self) -> Any:
            attempts.append(1)
            return super()._connect()

    no_retry = Retry(NoBackoff(), 0)
    pool = redis.ConnectionPool(
        connection_class=CountingConnection,
        host="127.0.0.1",
        port=port,
        socket_timeout=0.2,
        socket_connect_timeout=0.2,
        retry=no_retry,
    )
    return redis.Redis(connection_pool=pool, retry=no_retry), attempts


def test_a_real_outage_costs_one_connection_attempt_per_interval(
    redis_factory, use_server, sent, caplog
):
    """Against a killed redis-server, at most one real attempt per interval; a restart closes it."""
    server = redis_factory()
    use_server(server, BREAKER_PROBE_INTERVAL=0.2)
    breaker = breaker_for("redis")
    client, attempts = counting_client(server.port)
    allowed = 0

    def step() -> None:
        nonlocal allowed
        if not breaker.allow():
            return
        allowed += 1
        try:
            client.ping()
        except redis.exceptions.ConnectionError as err:
            breaker.record_failure(err)
        else:
            breaker.record_success()

    def is_closed() -> bool:
        # A call, so that mypy does not carry one phase's narrowing into the next.
        return breaker.state is BreakerState.CLOSED

    step()
    assert is_closed()

    server.kill()
    attempts.clear()
    allowed = 0
    began = time.monotonic()
    for _ in range(100):
        step()
        time.sleep(0.01)
    elapsed = time.monotonic() - began
    assert not is_closed()
    # The failure that opened it, then at most one probe per elapsed interval.
    assert 2 <= allowed <= 1 + elapsed / 0.2
    assert len(attempts) <= allowed

    server.start()
    attempts.clear()
    allowed = 0
    for _ in range(500):
        step()
        if is_closed():
            break
        time.sleep(0.01)
    assert is_closed()
    assert (allowed, len(attempts)) == (1, 1)  # the next probe closed it
    assert [kind for kind, _ in sent] == ["degraded", "recovered"]
    client.close()
