"""CEL subscription filters and ordering keys: compiled by the compiler, evaluated by the Router."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hookgate.model.compiler import compile_config
from hookgate.model.expressions import ExpressionError, activation, compile_expression
from hookgate.model.resources import Location, parse_resource
from hookgate.model.routing import EndpointConfig, Router, RoutingConfig, SubscriptionConfig

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def resources(filter_: str | None, *, ordering: str | None = None) -> list[Any]:
    spec: dict[str, Any] = {"url": "https://hooks.example.com/in",
                            "secretRef": {"name": "s"}}
    if ordering:
        spec["ordering"] = {"key": ordering}
    sub: dict[str, Any] = {"endpointRef": {"name": "ep"}, "eventTypes": ["order.*"]}
    if filter_ is not None:
        sub["filter"] = filter_
    docs = [
        {"apiVersion": "hookgate.io/v1alpha1", "kind": "WebhookEndpoint",
         "metadata": {"name": "ep"}, "spec": spec},
        {"apiVersion": "hookgate.io/v1alpha1", "kind": "Subscription",
         "metadata": {"name": "big-orders"}, "spec": sub},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
         "stringData": {"secret": SECRET}},
    ]
    return [parse_resource(d, Location("m.yaml")) for d in docs]


def variables(type_: str, data: Any) -> dict[str, Any]:
    return activation(type=type_, data=data, source=None, id="evt_1", time=time.time())


def test_filter_selects_events_by_payload_and_type() -> None:
    compiled = compile_config(resources("data.amount > 100 && type.startsWith('order.')"),
                              "default/default")
    assert compiled.problems == ()
    router = Router(compiled.config)
    route = router.route("order.created", None, variables("order.created", {"amount": 120}))
    assert route.endpoints == ("default/ep",) and route.errors == ()
    small = router.route("order.created", None, variables("order.created", {"amount": 5}))
    assert small.endpoints == () and small.errors == ()
    # the glob still decides first: no filter runs for a type nobody subscribed to
    assert router.route("invoice.paid", None, variables("invoice.paid", {"amount": 900})
                        ).endpoints == ()


def test_filter_sees_source_id_and_time() -> None:
    compiled = compile_config(
        resources("source == null && id == 'evt_1' && time > timestamp('2020-01-01T00:00:00Z')"),
        "default/default")
    assert compiled.problems == ()
    route = Router(compiled.config).route("order.x", None, variables("order.x", {}))
    assert route.endpoints == ("default/ep",)


def test_evaluation_error_is_no_match_and_reported() -> None:
    compiled = compile_config(resources("data.amount > 100"), "default/default")
    router = Router(compiled.config)
    route = router.route("order.created", None, variables("order.created", {"other": 1}))
    assert route.endpoints == ()
    ((sub, message),) = route.errors
    assert sub == "default/big-orders" and "amount" in message
    wrong_type = router.route("order.created", None, variables("order.created", {"amount": "x"}))
    assert wrong_type.endpoints == () and len(wrong_type.errors) == 1


def test_non_boolean_filter_is_an_error_not_a_match() -> None:
    compiled = compile_config(resources("data.amount"), "default/default")
    route = Router(compiled.config).route("order.x", None, variables("order.x", {"amount": 3}))
    assert route.endpoints == () and "true or false" in route.errors[0][1]


@pytest.mark.parametrize("expression", ["data.amount > ", "data.amount >>> 3", "(("])
def test_invalid_filter_is_a_problem_with_position(expression: str) -> None:
    compiled = compile_config(resources(expression), "default/default")
    (problem,) = compiled.problems
    assert problem.reason == "InvalidFilter"
    assert problem.field == "spec.filter" and problem.name == "big-orders"
    assert "column" in problem.message
    assert compiled.config.subscriptions == ()  # left out; the rest of the config stands
    assert "default/ep" in compiled.config.endpoints


def test_compile_error_names_the_column() -> None:
    with pytest.raises(ExpressionError, match="column 15"):
        compile_expression("data.amount > ")


def test_ordering_key_is_computed_per_endpoint() -> None:
    compiled = compile_config(resources(None, ordering="data.customer_id"), "default/default")
    assert compiled.problems == ()
    router = Router(compiled.config)
    route = router.route("order.x", None, variables("order.x", {"customer_id": 42}))
    assert route.ordering_keys == {"default/ep": "42"}
    missing = router.route("order.x", None, variables("order.x", {}))
    assert missing.endpoints == ("default/ep",) and missing.ordering_keys == {}
    assert "ordering key" in missing.errors[0][1]


def test_invalid_ordering_key_is_a_problem() -> None:
    compiled = compile_config(resources(None, ordering="data.("), "default/default")
    (problem,) = compiled.problems
    assert (problem.reason, problem.field) == ("InvalidOrderingKey", "spec.ordering.key")


def test_filter_and_ordering_survive_the_json_round_trip() -> None:
    compiled = compile_config(resources("data.amount > 1", ordering="data.c"), "default/default")
    again = RoutingConfig.from_json(compiled.config.to_json())
    assert again == compiled.config


def test_the_cel_command_line_is_not_loaded_with_the_evaluator() -> None:
    """cel's package imports its CLI (prompt_toolkit, rich: 23 MiB, 0.3 s per process);
    Hookgate's processes must not pay for it, and expressions must still evaluate."""
    import subprocess
    import sys

    probe = ("import sys; from hookgate.model.expressions import compile_expression, evaluate; "
             "print(evaluate(compile_expression('1 + 2'), {}), "
             "'prompt_toolkit' in sys.modules, 'rich' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out == ["3", "False", "False"]


def test_one_program_per_distinct_filter_each_evaluated_for_its_subscription() -> None:
    def sub(name: str, filter_: str) -> SubscriptionConfig:
        return SubscriptionConfig(f"ns/{name}", f"ns/{name}", ("order.*",), filter=filter_)

    subs = [sub("a", "data.amount > 100"), sub("b", "data.amount > 100"),
            sub("c", "data.amount > 5")]
    endpoints = {s.endpoint: EndpointConfig(s.endpoint, "https://x.example", 15, (0,))
                 for s in subs}
    router = Router(RoutingConfig("ns/default", endpoints, tuple(subs)))
    assert router._filters["ns/a"] is router._filters["ns/b"]  # compiled once, shared
    assert router._filters["ns/a"] is not router._filters["ns/c"]
    for amount, expected in [(50, ("ns/c",)), (150, ("ns/a", "ns/b", "ns/c")), (1, ())]:
        route = router.route("order.x", None, variables("order.x", {"amount": amount}))
        assert route.endpoints == expected


def test_the_router_reuses_the_programs_the_compiler_compiled() -> None:
    # More distinct filters than the 4,096 programs once cached: none compiled twice.
    n = 5000
    docs = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
             "stringData": {"secret": SECRET}}]
    for i in range(n):
        docs.append({"apiVersion": "hookgate.io/v1alpha1", "kind": "WebhookEndpoint",
                     "metadata": {"name": f"ep{i}"},
                     "spec": {"url": "https://x.example", "secretRef": {"name": "s"}}})
        docs.append({"apiVersion": "hookgate.io/v1alpha1", "kind": "Subscription",
                     "metadata": {"name": f"s{i}"},
                     "spec": {"endpointRef": {"name": f"ep{i}"}, "eventTypes": ["order.*"],
                              "filter": f"data.amount > {i} && data.unique == {n + i}"}})
    compiled = compile_config([parse_resource(d) for d in docs], "default/default")
    assert compiled.problems == ()
    before = compile_expression.cache_info()
    router = Router(compiled.config)
    after = compile_expression.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (0, n)
    route = router.route("order.x", None, variables("order.x", {"amount": 3, "unique": n + 2}))
    assert route.endpoints == ("default/ep2",)
