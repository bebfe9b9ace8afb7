"""Circuit breakers, one per endpoint: stop sending to a receiver that keeps failing.

A pure state machine with an injectable clock; the dispatcher asks it before each attempt
and tells it every outcome::

    CLOSED ──(failure_threshold consecutive failures)──► OPEN
    OPEN ──(cooldown elapsed; the next delivery is let through as a trial)──► HALF_OPEN
    HALF_OPEN ──trial succeeds──► CLOSED      HALF_OPEN ──trial fails──► OPEN (new cooldown)

While OPEN, and while the trial is under way in HALF_OPEN, deliveries are postponed (no
attempt is counted) until the circuit may let one through again. A failed attempt is any
attempt without a 2xx answer (timeouts and refused connections included).

The state is shared: the count of consecutive failures and the time the circuit opened live
in the queue (:class:`~hookgate.deliverer.queues.base.EndpointHealth`), which the dispatcher
updates on every outcome and reads back every second. So the failures of every deliverer of
a gateway count toward one breaker, all of them agree on when it opened and when it may be
tried again, and a restarted deliverer finds the breaker as it was. The one trial of a
half-open circuit is claimed in the queue too (:attr:`Circuit.trial` tells the dispatcher to
claim it). The queue opens the circuit in the same atomic step that counts the failure
that is due to open it, so no deliverer can die between the two. This module does no I/O:
:meth:`Circuit.failure` and :meth:`Circuit.sync` take the shared record's values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum

from hookgate.model.routing import CircuitBreakerConfig

__all__ = ["Circuit", "Circuits", "State", "Transition"]


class State(IntEnum):
    """The metric value of each state (``hookgate_circuit_state``)."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    @property
    def title(self) -> str:
        """The status spelling: Closed, HalfOpen, Open."""
        return {0: "Closed", 1: "HalfOpen", 2: "Open"}[self.value]


@dataclass(frozen=True)
class Transition:
    endpoint: str
    before: State
    after: State
    at: float
    reason: str


class Circuit:
    """The breaker of one endpoint, as this deliverer last saw the shared record."""

    def __init__(self, endpoint: str, settings: CircuitBreakerConfig,
                 clock: Callable[[], float] = time.time,
                 on_change: Callable[[Transition], None] | None = None) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.clock = clock
        self.on_change = on_change
        self._state = State.CLOSED
        self.failures = 0  # consecutive failed attempts, of every deliverer
        self.opened_at: float | None = None  # None while closed
        self._probing = False  # this deliverer let the trial through
        self.changed_at = float("-inf")  # when an outcome seen here last changed the record

    @property
    def state(self) -> State:
        """The state now: an OPEN circuit whose cooldown passed reads as HALF_OPEN."""
        after = self._derived()
        if after is not self._state:
            self._move(after, _REASONS[(self._state, after)])
        return self._state

    def _derived(self) -> State:
        if self.opened_at is None:
            return State.CLOSED
        return State.OPEN if self.clock() < self.reopens_at else State.HALF_OPEN

    @property
    def reopens_at(self) -> float:
        return (self.opened_at or 0.0) + self.settings.cooldown

    @property
    def trial(self) -> bool:
        """The delivery just admitted is the half-open circuit's trial: the dispatcher must
        claim it for all deliverers (and :meth:`cancel` it if another holds the claim)."""
        return self._probing

    def admit(self) -> float | None:
        """None if a delivery may be attempted now (it must then report its outcome);
        otherwise the time at which to ask again."""
        state = self.state
        if state is State.CLOSED:
            return None
        if state is State.OPEN:
            return self.reopens_at
        if self._probing:  # one trial at a time
            return self.clock() + min(1.0, self.settings.cooldown)
        self._probing = True
        return None

    def cancel(self) -> None:
        """An admitted delivery was not attempted after all (stopped, saturated, another
        deliverer holds the trial)."""
        self._probing = False

    def success(self) -> None:
        """An attempt succeeded: the record is cleared."""
        self.failures = 0
        self.opened_at = None
        self._probing = False
        self.changed_at = self.clock()
        self._move(State.CLOSED, "a delivery succeeded")

    def failure(self, failures: int, opened_at: float | None) -> None:
        """An attempt failed; ``failures`` and ``opened_at`` are the shared record after the
        queue counted it (and opened the circuit if it was due: the failure threshold
        reached, or a trial failed, as the dispatcher asked with :attr:`trial`)."""
        trial, self._probing = self._probing, False
        self.changed_at = self.clock()
        before = self.state
        self.failures, self.opened_at = failures, opened_at
        if self._derived() is State.OPEN and before is not State.OPEN:
            self._move(State.OPEN, "the trial delivery failed" if trial
                       else f"{failures} consecutive deliveries failed"
                       if before is State.CLOSED else _REASONS[(before, State.OPEN)])
        _ = self.state  # announce any other change the record shows

    def sync(self, failures: int, opened_at: float | None, read_at: float) -> None:
        """Adopt the shared record as read at ``read_at`` (0 failures: no record), unless an
        outcome seen here changed it since."""
        if self.changed_at > read_at:
            return
        self.failures = failures
        self.opened_at = opened_at
        _ = self.state  # announce the transition, if any

    def _open(self, reason: str) -> None:
        self.opened_at = self.clock()
        self._move(State.OPEN, reason)

    def _move(self, after: State, reason: str) -> None:
        before, self._state = self._state, after
        if self.on_change is not None and before is not after:
            self.on_change(Transition(self.endpoint, before, after, self.clock(), reason))


# Why a circuit's state changed when the change is read from the shared record.
_REASONS = {
    (State.OPEN, State.HALF_OPEN): "cooldown over; the next delivery is a trial",
    (State.CLOSED, State.HALF_OPEN): "cooldown over; the next delivery is a trial",
    (State.CLOSED, State.OPEN): "opened by another deliverer",
    (State.HALF_OPEN, State.OPEN): "the trial failed at another deliverer",
    (State.OPEN, State.CLOSED): "a delivery succeeded at another deliverer",
    (State.HALF_OPEN, State.CLOSED): "a delivery succeeded at another deliverer",
}


class Circuits:
    """The breakers of all endpoints of a gateway, created on first use.

    A config change that alters an endpoint's breaker settings keeps its state.
    """

    def __init__(self, clock: Callable[[], float] = time.time,
                 on_change: Callable[[Transition], None] | None = None) -> None:
        self.clock = clock
        self.on_change = on_change
        self._circuits: dict[str, Circuit] = {}
        self._records: Mapping[str, tuple[int, float | None]] = {}

    def get(self, endpoint: str, settings: CircuitBreakerConfig) -> Circuit:
        circuit = self._circuits.get(endpoint)
        if circuit is None:
            circuit = self._circuits[endpoint] = Circuit(endpoint, settings, self.clock,
                                                         self.on_change)
            failures, opened_at = self._records.get(endpoint, (0, None))
            circuit.sync(failures, opened_at, self.clock())
        elif circuit.settings != settings:
            circuit.settings = settings
        return circuit

    def states(self) -> dict[str, State]:
        """Endpoint key -> state, for every endpoint that has been delivered to."""
        return {key: c.state for key, c in self._circuits.items()}

    def sync(self, records: Mapping[str, tuple[int, float | None]], read_at: float) -> None:
        """Adopt the shared records (endpoint -> failures, opened at) read at ``read_at``;
        an endpoint without a record has no failure on record. Breakers made later start
        from these records."""
        self._records = records
        for key, circuit in self._circuits.items():
            failures, opened_at = records.get(key, (0, None))
            circuit.sync(failures, opened_at, read_at)

    def forget(self, keep: set[str]) -> None:
        """Drop the breakers of endpoints no longer configured."""
        for key in set(self._circuits) - keep:
            del self._circuits[key]
