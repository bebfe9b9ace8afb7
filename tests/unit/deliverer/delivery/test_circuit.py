"""The circuit breaker state machine, driven by a fake clock."""

from __future__ import annotations

from hookgate.deliverer.delivery.circuit import Circuit, Circuits, State, Transition
from hookgate.model.routing import CircuitBreakerConfig
from tests.support.clock import FakeClock


def make(threshold: int = 3, cooldown: float = 30.0
         ) -> tuple[Circuit, FakeClock, list[Transition]]:
    clock = FakeClock(1000.0)
    seen: list[Transition] = []
    circuit = Circuit("shop/a", CircuitBreakerConfig(threshold, cooldown), clock, seen.append)
    return circuit, clock, seen


def test_opens_after_consecutive_failures_only() -> None:
    circuit, _, seen = make(threshold=3)
    for _ in range(2):
        assert circuit.admit() is None
        circuit.failure()
    circuit.success()  # a success in between starts the count again
    for _ in range(2):
        circuit.failure()
    assert circuit.state is State.CLOSED and seen == []
    circuit.failure()
    assert circuit.state is State.OPEN
    assert [(t.before, t.after) for t in seen] == [(State.CLOSED, State.OPEN)]
    assert "3 consecutive" in seen[0].reason


def test_open_circuit_postpones_until_the_cooldown_ends() -> None:
    circuit, clock, _ = make(threshold=1, cooldown=30)
    circuit.failure()
    assert circuit.admit() == 1030.0
    clock.now += 29.9
    assert circuit.admit() == 1030.0


def test_half_open_lets_one_trial_through_and_success_closes() -> None:
    circuit, clock, seen = make(threshold=1, cooldown=30)
    circuit.failure()
    clock.now += 30
    assert circuit.state is State.HALF_OPEN
    assert circuit.admit() is None  # the trial
    retry_at = circuit.admit()  # everything else waits while the trial is under way
    assert retry_at is not None and retry_at > clock.now
    circuit.success()
    assert circuit.state is State.CLOSED and circuit.admit() is None
    assert [t.after for t in seen] == [State.OPEN, State.HALF_OPEN, State.CLOSED]


def test_failed_trial_reopens_for_a_new_cooldown() -> None:
    circuit, clock, seen = make(threshold=2, cooldown=10)
    circuit.failure()
    circuit.failure()
    clock.now += 10
    assert circuit.admit() is None
    circuit.failure()
    assert circuit.state is State.OPEN and circuit.admit() == clock.now + 10
    assert seen[-1].reason == "the trial delivery failed"


def test_a_trial_not_attempted_frees_the_slot() -> None:
    circuit, clock, _ = make(threshold=1, cooldown=5)
    circuit.failure()
    clock.now += 5
    assert circuit.admit() is None
    circuit.cancel()  # e.g. the endpoint was saturated after all
    assert circuit.admit() is None


def test_registry_reports_states_and_keeps_state_across_setting_changes() -> None:
    clock = FakeClock(1000.0)
    circuits = Circuits(clock)
    a = circuits.get("shop/a", CircuitBreakerConfig(1, 30))
    circuits.get("shop/b", CircuitBreakerConfig(1, 30))
    a.failure()
    assert circuits.states() == {"shop/a": State.OPEN, "shop/b": State.CLOSED}
    same = circuits.get("shop/a", CircuitBreakerConfig(1, 60))
    assert same is a and same.admit() == 1060.0
    circuits.forget({"shop/b"})
    assert set(circuits.states()) == {"shop/b"}
    assert State.HALF_OPEN.title == "HalfOpen" and int(State.OPEN) == 2
