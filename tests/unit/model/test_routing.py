from __future__ import annotations

import pytest

from hookgate.model.routing import (
    EndpointConfig,
    RateLimitConfig,
    Router,
    RoutingConfig,
    SubscriptionConfig,
)


def config(*subs: tuple[str, str, tuple[str, ...]]) -> RoutingConfig:
    endpoints = {f"ns/{e}": EndpointConfig(f"ns/{e}", f"http://127.0.0.1/{e}", 15, (0, 5))
                 for e in ("a", "b", "c")}
    return RoutingConfig("ns/default", endpoints, tuple(
        SubscriptionConfig(f"ns/{name}", f"ns/{ep}", types) for name, ep, types in subs))


@pytest.mark.parametrize(("event_type", "expected"), [
    ("order.created", ["ns/a", "ns/c"]),
    ("order.line.added", ["ns/a", "ns/c"]),
    ("invoice.paid", ["ns/b", "ns/c"]),
    ("invoice.voided", ["ns/c"]),
    ("orders", ["ns/c"]),
])
def test_globs_and_exact_types_route_each_endpoint_once(event_type: str,
                                                        expected: list[str]) -> None:
    router = Router(config(("s1", "a", ("order.*",)), ("s2", "b", ("invoice.paid",)),
                           ("s3", "c", ("*",)), ("s4", "a", ("order.created",))))
    assert sorted(router.endpoints(event_type)) == expected


def test_question_mark_matches_one_character_and_dots_are_literal() -> None:
    router = Router(config(("s", "a", ("v?.created",))))
    assert router.endpoints("v1.created") == ["ns/a"]
    assert router.endpoints("v10.created") == []
    assert Router(config(("s", "a", ("a.b",)))).endpoints("axb") == []


def test_subscription_to_a_source_only_sees_that_source() -> None:
    cfg = config()
    cfg = RoutingConfig(cfg.gateway, cfg.endpoints, (
        SubscriptionConfig("ns/gh", "ns/a", ("*",), source="ns/github"),))
    router = Router(cfg)
    assert router.endpoints("push", "ns/github") == ["ns/a"]
    assert router.endpoints("push", None) == []


def test_config_round_trips_through_json() -> None:
    cfg = config(("s1", "a", ("order.*",)))
    cfg = RoutingConfig(cfg.gateway, {**cfg.endpoints, "ns/r": EndpointConfig(
        "ns/r", "https://x.example/", 5, (0, 1), {"X-T": "1"}, RateLimitConfig(5, 10), 8, True)},
        cfg.subscriptions, ("10.0.0.0/8",))
    assert RoutingConfig.from_json(cfg.to_json()) == cfg


def test_config_of_another_format_version_is_refused_with_advice() -> None:
    with pytest.raises(ValueError, match="same Hookgate version"):
        RoutingConfig.from_json('{"version": 99}')
