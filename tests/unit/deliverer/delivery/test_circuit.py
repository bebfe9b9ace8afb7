"""The circuit breaker state machine, driven by a fake clock and a stand-in for the shared
record the queue keeps (the queue's side is tested in the queue contract)."""

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


def fail(circuit: Circuit) -> None:
    """One failed attempt of this deliverer alone, recorded as the queue records it: one
    more failure, and the circuit opened (now) when the threshold is reached or a trial
    failed."""
    failures, opened_at = circuit.failures + 1, circuit.opened_at
    if ((opened_at is None and failures >= circuit.settings.failure_threshold)
            or (opened_at is not None and circuit.trial)):
        opened_at = circuit.clock()
    circuit.failure(failures, opened_at)


def test_opens_after_consecutive_failures_only() -> None:
    circuit, _, seen = make(threshold=3)
    for _ in range(2):
        assert circuit.admit() is None
        fail(circuit)
    circuit.success()  # a success in between starts the count again
    for _ in range(2):
        fail(circuit)
    assert circuit.state is State.CLOSED and seen == []
    fail(circuit)
    assert circuit.state is State.OPEN and circuit.opened_at == 1000.0
    assert [(t.before, t.after) for t in seen] == [(State.CLOSED, State.OPEN)]
    assert "3 consecutive" in seen[0].reason


def test_failures_of_other_deliverers_count() -> None:
    circuit, _, seen = make(threshold=5)
    circuit.failure(4, None)  # 3 failures elsewhere, then one here
    circuit.failure(5, 1000.0)  # the queue opened it: the threshold was reached
    assert circuit.state is State.OPEN and "5 consecutive" in seen[-1].reason


def test_open_circuit_postpones_until_the_cooldown_ends() -> None:
    circuit, clock, _ = make(threshold=1, cooldown=30)
    fail(circuit)
    assert circuit.admit() == 1030.0
    clock.now += 29.9
    assert circuit.admit() == 1030.0


def test_half_open_lets_one_trial_through_and_success_closes() -> None:
    circuit, clock, seen = make(threshold=1, cooldown=30)
    fail(circuit)
    clock.now += 30
    assert circuit.state is State.HALF_OPEN
    assert circuit.admit() is None and circuit.trial  # the trial, to be claimed in the queue
    retry_at = circuit.admit()  # everything else waits while the trial is under way
    assert retry_at is not None and retry_at > clock.now
    circuit.success()
    assert circuit.state is State.CLOSED and circuit.admit() is None and not circuit.trial
    assert [t.after for t in seen] == [State.OPEN, State.HALF_OPEN, State.CLOSED]


def test_failed_trial_reopens_for_a_new_cooldown() -> None:
    circuit, clock, seen = make(threshold=2, cooldown=10)
    fail(circuit)
    fail(circuit)
    clock.now += 10
    assert circuit.admit() is None
    fail(circuit)
    assert circuit.state is State.OPEN and circuit.admit() == clock.now + 10
    assert seen[-1].reason == "the trial delivery failed"


def test_a_trial_not_attempted_frees_the_slot() -> None:
    circuit, clock, _ = make(threshold=1, cooldown=5)
    fail(circuit)
    clock.now += 5
    assert circuit.admit() is None
    circuit.cancel()  # e.g. another deliverer holds the trial, or the endpoint was saturated
    assert not circuit.trial and circuit.admit() is None


def test_sync_adopts_what_other_deliverers_recorded() -> None:
    circuit, clock, seen = make(threshold=3, cooldown=30)
    circuit.sync(3, 990.0, read_at=clock.now)  # opened elsewhere 10 s ago
    assert circuit.state is State.OPEN and circuit.admit() == 1020.0
    assert seen[-1].reason == "opened by another deliverer"
    circuit.sync(0, None, read_at=clock.now)  # a success elsewhere cleared the record
    assert circuit.state is State.CLOSED and circuit.failures == 0
    assert seen[-1].reason == "a delivery succeeded at another deliverer"


def test_a_stale_read_does_not_undo_an_outcome_seen_since() -> None:
    circuit, clock, _ = make(threshold=1, cooldown=30)
    read_at = clock.now
    clock.now += 0.1
    fail(circuit)  # opened here after the read started
    circuit.sync(0, None, read_at=read_at)
    assert circuit.state is State.OPEN


def test_a_failure_reported_while_another_deliverer_opened_it_adopts_that_opening() -> None:
    circuit, _, seen = make(threshold=3, cooldown=30)
    circuit.failure(7, 995.0)  # opened by another deliverer since this one last read
    assert circuit.state is State.OPEN and circuit.opened_at == 995.0
    assert circuit.admit() == 1025.0  # the cooldown counts from the shared opening
    assert seen[-1].reason == "7 consecutive deliveries failed"


def test_registry_reports_states_and_keeps_state_across_setting_changes() -> None:
    clock = FakeClock(1000.0)
    circuits = Circuits(clock)
    a = circuits.get("shop/a", CircuitBreakerConfig(1, 30))
    circuits.get("shop/b", CircuitBreakerConfig(1, 30))
    fail(a)
    assert circuits.states() == {"shop/a": State.OPEN, "shop/b": State.CLOSED}
    same = circuits.get("shop/a", CircuitBreakerConfig(1, 60))
    assert same is a and same.admit() == 1060.0
    circuits.forget({"shop/b"})
    assert set(circuits.states()) == {"shop/b"}
    assert State.HALF_OPEN.title == "HalfOpen" and int(State.OPEN) == 2


def test_registry_sync_reaches_existing_and_later_breakers() -> None:
    clock = FakeClock(1000.0)
    circuits = Circuits(clock)
    a = circuits.get("shop/a", CircuitBreakerConfig(3, 30))
    circuits.sync({"shop/a": (3, 999.0), "shop/c": (4, 998.0)}, read_at=clock.now)
    assert a.state is State.OPEN
    later = circuits.get("shop/c", CircuitBreakerConfig(3, 30))  # after a restart, say
    assert later.state is State.OPEN and later.failures == 4
