"""A circuit breaker, so that requests stop waiting on a session store that is down.

The hybrid engine keeps one :class:`CircuitBreaker` per store and process, from
:func:`breaker_for`.  It has three states:

``closed``
    :meth:`~CircuitBreaker.allow` answers ``True``.  Callers use the store and
    report each outcome with :meth:`~CircuitBreaker.record_success` or
    :meth:`~CircuitBreaker.record_failure`; the first failure opens the breaker.
``open``
    ``allow()`` answers ``False`` at once, so requests go to the fallback without
    waiting on a timeout.  ``probe_interval`` seconds after the breaker opened, or
    after its last failed probe, the next ``allow()`` answers ``True``: that caller
    is the probe, and the breaker is half-open.
``half-open``
    ``allow()`` answers ``False`` to everyone else until the probe reports.  A
    success runs the caller's ``before_close`` (the hybrid engine reconciles Redis
    there, before trusting it) and closes the breaker.  A failure, or a
    ``before_close`` that raises, opens it again for a full interval.  A probe
    that never reports (its task was cancelled before it could) is presumed lost
    after ``probe_timeout`` seconds, and the next caller probes instead.

Locks are held only for a few assignments, never while a callback runs, a
signal is sent or a line is logged, so asyncio code may call :meth:`allow` and
the sync methods without blocking its loop for longer than that.  The async
twins :meth:`~CircuitBreaker.arecord_success` and
:meth:`~CircuitBreaker.arecord_failure` await an async ``before_close`` and send
signals with ``asend()``.

Each transition is announced once: closed -> open sends ``store_degraded`` and
logs a ``WARNING``; half-open -> closed sends ``store_recovered`` and logs at
``INFO``.  A failed probe only logs at ``DEBUG``: the outage was announced already.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable

from django.core.signals import setting_changed

from .conf import elastic_settings
from .connection import _redact, is_outage
from .exceptions import SessionStoreUnavailable
from .signals import store_degraded, store_recovered

logger = logging.getLogger(__name__)

# Seconds after which a probe that never reported is presumed lost.  Generous:
# the probe's own Redis calls are bounded by the socket timeouts, and a probe
# that reconciles is never presumed lost while it runs.
LOST_PROBE_TIMEOUT = 30.0


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """One store's breaker; see the module docstring for the states.

    ``clock`` returns seconds and must never go backwards (``time.monotonic``).
    """

    def __init__(
        self,
        name: str,
        *,
        probe_interval: float,
        probe_timeout: float = LOST_PROBE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if probe_interval <= 0 or probe_timeout <= 0:
            raise ValueError("probe_interval and probe_timeout must be positive.")
        self.name = name
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._opened_at: float | None = None
        self._next_probe_at = 0.0
        self._probe_started_at = 0.0
        # Which probe a before_close belongs to: a failure reported meanwhile, or a
        # newer probe, makes the older one's close void.
        self._probe_id = 0
        self._closing = False

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._state}>"

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def opened_at(self) -> float | None:
        """The clock's time when the breaker last opened from closed; ``None`` while closed."""
        return self._opened_at

    def allow(self) -> bool:
        """Whether the caller may use the store now.

        ``True`` while closed.  While open, ``True`` for exactly one caller once the
        probe interval has passed; that caller must report with ``record_success()``
        or ``record_failure()``.  ``False`` otherwise: use the fallback.
        """
        # Read without the lock: the closed state is every healthy request's path.
        state = self._state
        if state is BreakerState.CLOSED:
            return True
        with self._lock:
            state = self._state
            if state is BreakerState.CLOSED:
                return True
            now = self._clock()
            if state is BreakerState.OPEN and now < self._next_probe_at:
                return False
            if state is BreakerState.HALF_OPEN and (
                self._closing or now - self._probe_started_at < self.probe_timeout
            ):
                return False
            self._state = BreakerState.HALF_OPEN
            self._probe_started_at = now
            self._probe_id += 1
        if state is BreakerState.HALF_OPEN:
            logger.debug("Probe of session store %s presumed lost; probing again.", self.name)
        return True

    def record_failure(self, error: BaseException) -> None:
        """Report that the store failed: open the breaker, or keep it open.

        From closed, sends ``store_degraded`` (sender :class:`CircuitBreaker`, with
        ``name`` and ``error``) and logs a ``WARNING``.  From half-open, waits a new
        full interval.  While open, a late report of a call that started while the
        breaker was closed changes nothing.
        """
        if self._fail(error):
            store_degraded.send(CircuitBreaker, name=self.name, error=error)

    async def arecord_failure(self, error: BaseException) -> None:
        if self._fail(error):
            await store_degraded.asend(CircuitBreaker, name=self.name, error=error)

    def record_success(self, before_close: Callable[[], object] | None = None) -> bool:
        """Report that the store answered; return whether the breaker is closed now.

        While closed this costs nothing.  From half-open, ``before_close()`` runs
        first (once, even if several callers report success); if it raises an
        ``Exception``, that counts as a failed probe and this returns ``False``.
        Then the breaker closes, sends ``store_recovered`` (sender
        :class:`CircuitBreaker`, with ``name`` and ``downtime`` in seconds) and logs
        at ``INFO``.  While open, or while another caller's ``before_close`` runs,
        a success changes nothing: Redis is not trusted before it is reconciled.
        """
        if self._state is BreakerState.CLOSED:
            return True
        probe = self._begin_close()
        if probe is None:
            return self.is_closed()
        if before_close is not None:
            try:
                before_close()
            except Exception as err:  # logged; the fallback keeps serving
                self._fail(err, probe=probe, during="reconciling")
                return False
            except BaseException:
                self._abandon(probe)
                raise
        downtime = self._finish_close(probe)
        if downtime is None:
            return False
        store_recovered.send(CircuitBreaker, name=self.name, downtime=downtime)
        return True

    async def arecord_success(
        self, before_close: Callable[[], Awaitable[object]] | None = None
    ) -> bool:
        if self._state is BreakerState.CLOSED:
            return True
        probe = self._begin_close()
        if probe is None:
            return self.is_closed()
        if before_close is not None:
            try:
                await before_close()
            except Exception as err:  # logged; the fallback keeps serving
                self._fail(err, probe=probe, during="reconciling")
                return False
            except BaseException:  # cancelled: let the next caller probe
                self._abandon(probe)
                raise
        downtime = self._finish_close(probe)
        if downtime is None:
            return False
        await store_recovered.asend(CircuitBreaker, name=self.name, downtime=downtime)
        return True

    def is_closed(self) -> bool:
        """Whether callers use the store now (read without the lock: a snapshot)."""
        # A method, not an inline test of the state: mypy would keep an earlier
        # narrowing of self._state although another thread may have changed it.
        return self._state is BreakerState.CLOSED

    def reset(self) -> None:
        """Close the breaker at once, silently (for tests and settings changes)."""
        with self._lock:
            self._state = BreakerState.CLOSED
            self._opened_at = None
            self._closing = False
            self._probe_id += 1

    def _fail(
        self, error: BaseException, *, probe: int | None = None, during: str = "probing"
    ) -> bool:
        """Record a failure; return whether the breaker just opened from closed."""
        with self._lock:
            now = self._clock()
            state = self._state
            if state is BreakerState.OPEN or (probe is not None and probe != self._probe_id):
                return False
            self._state = BreakerState.OPEN
            self._next_probe_at = now + self.probe_interval
            self._closing = False
            if state is BreakerState.CLOSED:
                self._opened_at = now
        description = _describe(error)
        if state is BreakerState.CLOSED:
            logger.warning(
                "Session store %s unavailable (%s); requests skip it until a probe "
                "succeeds, at most one every %s s per process.",
                self.name,
                description,
                self.probe_interval,
            )
            return True
        if isinstance(error, SessionStoreUnavailable) or is_outage(error):
            logger.debug("Session store %s still unavailable (%s).", self.name, description)
        else:
            # Not an outage: most likely a bug in before_close, which would keep the
            # breaker open for good.  The traceback is what fixes it.
            logger.error(
                "Session store %s stays unavailable: %s failed (%s).",
                self.name,
                during,
                description,
                exc_info=error,
            )
        return False

    def _begin_close(self) -> int | None:
        """Claim the close of the current probe; ``None`` when it is not ours to close."""
        with self._lock:
            if self._state is not BreakerState.HALF_OPEN or self._closing:
                return None
            self._closing = True
            return self._probe_id

    def _finish_close(self, probe: int) -> float | None:
        """Close the breaker; return the downtime, or ``None`` if the probe went void."""
        with self._lock:
            if self._probe_id != probe or not self._closing:
                return None
            now = self._clock()
            downtime = now - (self._opened_at if self._opened_at is not None else now)
            self._state = BreakerState.CLOSED
            self._opened_at = None
            self._closing = False
        logger.info("Session store %s recovered after %.1f s.", self.name, downtime)
        return downtime

    def _abandon(self, probe: int) -> None:
        # The probe was cancelled mid-close: neither a success nor the store's
        # failure, so the next caller may probe at once.
        with self._lock:
            if self._probe_id == probe and self._closing:
                self._state = BreakerState.OPEN
                self._next_probe_at = self._clock()
                self._closing = False


def _describe(error: BaseException) -> str:
    """``Type: message`` without secrets (our own messages are redacted already)."""
    if isinstance(error, SessionStoreUnavailable):
        return str(error)
    return _redact(f"{type(error).__name__}: {error}")


_breakers: dict[str, CircuitBreaker] = {}
_breakers_pid = os.getpid()
_breakers_lock = threading.Lock()


def breaker_for(name: str) -> CircuitBreaker:
    """The process's breaker for the store called ``name``, made on first use.

    A settings change (``ELASTIC_SESSIONS``) or a fork gives fresh, closed breakers:
    a child process has its own connections, and so its own view of the store.
    """
    global _breakers_pid  # noqa: PLW0603 - one registry per process
    breaker = _breakers.get(name)
    if breaker is not None and _breakers_pid == os.getpid():
        return breaker
    with _breakers_lock:
        if _breakers_pid != os.getpid():
            _breakers.clear()
            _breakers_pid = os.getpid()
        breaker = _breakers.get(name)
        if breaker is None:
            breaker = _breakers[name] = CircuitBreaker(
                name, probe_interval=elastic_settings.BREAKER_PROBE_INTERVAL
            )
        return breaker


def reset_breakers() -> None:
    """Forget every breaker; the next :func:`breaker_for` makes a new, closed one."""
    with _breakers_lock:
        _breakers.clear()


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork time stays held in the child for
    # good, so the child gets a new lock along with its empty registry.
    global _breakers_lock, _breakers_pid  # noqa: PLW0603
    _breakers_lock = threading.Lock()
    _breakers.clear()
    _breakers_pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "ELASTIC_SESSIONS":
        reset_breakers()


setting_changed.connect(_on_setting_changed)
