"""The live config: one snapshot holds the whole config, and a change swaps all of it at once."""

from __future__ import annotations

from hookgate.deliverer.config.live import DEFAULT_MAX_BODY_BYTES, LiveConfig, Snapshot
from hookgate.model.bundle import GatewayConfig
from hookgate.model.compiler import Compiled, EndpointAuth
from hookgate.model.routing import EndpointConfig, RoutingConfig, SubscriptionConfig

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def gateway_config(url: str, *, api_key: str, token: str, allow: tuple[str, ...] = (),
                   max_body: int | None = None) -> GatewayConfig:
    routing = RoutingConfig(
        "shop/default", {"shop/a": EndpointConfig("shop/a", url, 5, (0,))},
        (SubscriptionConfig("shop/all", "shop/a", ("*",)),), allow_cidrs=allow)
    compiled = Compiled(config=routing, signing_keys={"shop/a": (SECRET,)},
                        endpoint_auth={"shop/a": EndpointAuth(authorization=f"Bearer {token}")},
                        source_secrets={"shop/src": {"secret": token}})
    return GatewayConfig(compiled, api_keys=(api_key,), max_body_bytes=max_body)


def test_a_snapshot_holds_the_whole_config() -> None:
    live = LiveConfig(gateway_config("http://a.example/", api_key="k1", token="t1",
                                     allow=("10.0.0.0/8",)),
                      extra_allow_cidrs=("127.0.0.0/8",))
    snap = live.current
    assert snap.version == 1
    assert snap.api_keys == ("k1",)
    assert snap.auth["shop/a"].authorization == "Bearer t1"
    assert snap.source_secrets == {"shop/src": {"secret": "t1"}}
    assert len(snap.keys["shop/a"]) == 1
    assert snap.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    assert snap.allow_cidrs == ("10.0.0.0/8", "127.0.0.0/8")
    assert snap.router.route("order.created", None, {}).endpoints == ("shop/a",)


def test_apply_switches_everything_in_one_step_and_listeners_see_the_new_snapshot() -> None:
    live = LiveConfig(gateway_config("http://a.example/", api_key="k1", token="t1"))
    old = live.current
    seen: list[tuple[Snapshot, Snapshot]] = []
    live.subscribe(lambda snap: seen.append((snap, live.current)))

    new = live.apply(gateway_config("http://b.example/", api_key="k2", token="t2",
                                    allow=("192.0.2.0/24",), max_body=4096))

    assert live.current is new and new.version == old.version + 1
    # listeners run after the swap, with the snapshot every reader now gets
    assert seen == [(new, new)]
    assert (new.api_keys, new.auth["shop/a"].authorization, new.max_body_bytes,
            new.allow_cidrs, new.config.endpoints["shop/a"].url) == \
        (("k2",), "Bearer t2", 4096, ("192.0.2.0/24",), "http://b.example/")
    # the old snapshot is untouched: a request or delivery that started on it finishes on it
    assert (old.api_keys, old.auth["shop/a"].authorization, old.config.endpoints["shop/a"].url) \
        == (("k1",), "Bearer t1", "http://a.example/")
