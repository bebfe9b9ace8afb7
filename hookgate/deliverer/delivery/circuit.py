"""Circuit breakers, one per endpoint: stop sending to a receiver that keeps failing.

A pure state machine with an injectable clock; the dispatcher asks it before each attempt
and tells it every outcome::

    CLOSED ──(failure_threshold consecutive failures)──► OPEN
    OPEN ──(cooldown elapsed; the next delivery is let through as a probe)──► HALF_OPEN
    HALF_OPEN ──probe succeeds──► CLOSED      HALF_OPEN ──probe fails──► OPEN (new cooldown)

While OPEN, and while the probe is under way in HALF_OPEN, deliveries are postponed (no
attempt is counted) until the circuit may let one through again. A failed attempt is any
attempt without a 2xx answer (timeouts and refused connections included).

State is per deliverer process: each one finds out for itself that an endpoint is down,
after at most ``failure_threshold`` attempts of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
    """The breaker of one endpoint."""

    def __init__(self, endpoint: str, settings: CircuitBreakerConfig,
                 clock: Callable[[], float] = time.time,
                 on_change: Callable[[Transition], None] | None = None) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.clock = clock
        self.on_change = on_change
        self._state = State.CLOSED
        self.failures = 0  # consecutive failed attempts
        self.opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> State:
        """The state now: an OPEN circuit whose cooldown passed reads as HALF_OPEN."""
        if self._state is State.OPEN and self.clock() >= self.reopens_at:
            self._move(State.HALF_OPEN, "cooldown over; the next delivery is a trial")
        return self._state

    @property
    def reopens_at(self) -> float:
        return self.opened_at + self.settings.cooldown

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
        """An admitted delivery was not attempted after all (stopped, saturated)."""
        self._probing = False

    def success(self) -> None:
        self.failures = 0
        self._probing = False
        if self._state is not State.CLOSED:
            self._move(State.CLOSED, "a delivery succeeded")

    def failure(self) -> None:
        self.failures += 1
        self._probing = False
        if self._state is State.HALF_OPEN:
            self._open("the trial delivery failed")
        elif self._state is State.CLOSED and self.failures >= self.settings.failure_threshold:
            self._open(f"{self.failures} consecutive deliveries failed")

    def _open(self, reason: str) -> None:
        self.opened_at = self.clock()
        self._move(State.OPEN, reason)

    def _move(self, after: State, reason: str) -> None:
        before, self._state = self._state, after
        if self.on_change is not None and before is not after:
            self.on_change(Transition(self.endpoint, before, after, self.clock(), reason))


class Circuits:
    """The breakers of all endpoints of a gateway, created on first use.

    A config change that alters an endpoint's breaker settings keeps its state.
    """

    def __init__(self, clock: Callable[[], float] = time.time,
                 on_change: Callable[[Transition], None] | None = None) -> None:
        self.clock = clock
        self.on_change = on_change
        self._circuits: dict[str, Circuit] = {}

    def get(self, endpoint: str, settings: CircuitBreakerConfig) -> Circuit:
        circuit = self._circuits.get(endpoint)
        if circuit is None:
            circuit = self._circuits[endpoint] = Circuit(endpoint, settings, self.clock,
                                                         self.on_change)
        elif circuit.settings != settings:
            circuit.settings = settings
        return circuit

    def states(self) -> dict[str, State]:
        """Endpoint key -> state, for every endpoint that has been delivered to."""
        return {key: c.state for key, c in self._circuits.items()}

    def forget(self, keep: set[str]) -> None:
        """Drop the breakers of endpoints no longer configured."""
        for key in set(self._circuits) - keep:
            del self._circuits[key]
