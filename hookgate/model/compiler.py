"""compile_config(resources) -> RoutingConfig: the one pure step from manifests to routing.

Standalone mode calls it on the files of a directory; the operator calls it on the objects of
a namespace. Problems with individual objects (a subscription naming a missing endpoint, a
missing secret) are returned beside the config instead of failing the whole gateway: the
operator shows them as conditions, ``hookgate run`` refuses to start on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from hookgate.model.problems import Problem
from hookgate.model.resources import (
    DEFAULT_RETRY_SCHEDULE,
    DEFAULT_TIMEOUT,
    Endpoint,
    Gateway,
    Resource,
    Secret,
    Subscription,
)
from hookgate.model.routing import (
    EndpointConfig,
    RateLimitConfig,
    RoutingConfig,
    SubscriptionConfig,
)

__all__ = ["Compiled", "compile_config", "endpoints_needing_secrets", "select_gateway"]


@dataclass(frozen=True)
class Compiled:
    config: RoutingConfig
    signing_keys: Mapping[str, tuple[str, ...]]
    problems: tuple[Problem, ...] = ()
    # object key ("Kind ns/name") -> its problems, for per-object status
    by_object: Mapping[str, tuple[Problem, ...]] = field(default_factory=dict)


def select_gateway(resources: Iterable[Resource], wanted: str | None) -> str:
    """The gateway key ``ns/name`` to compile for.

    ``wanted`` wins; otherwise the only ``WebhookGateway`` among the resources, or the
    implicit ``default/default`` when there is none.
    """
    if wanted:
        return wanted if "/" in wanted else f"default/{wanted}"
    gateways = [r.meta.key for r in resources if isinstance(r, Gateway)]
    return gateways[0] if len(gateways) == 1 else "default/default"


def endpoints_needing_secrets(resources: Iterable[Resource], gateway: str) -> list[str]:
    """Keys of this gateway's endpoints that name no secret, so one must be generated."""
    return [r.meta.key for r in resources
            if isinstance(r, Endpoint) and r.secret_ref is None and _belongs(r, gateway)]


def _belongs(ep: Endpoint, gateway: str) -> bool:
    namespace, name = gateway.split("/", 1)
    return ep.meta.namespace == namespace and ep.gateway == name


def compile_config(resources: Iterable[Resource], gateway: str,
                   generated_secrets: Mapping[str, str] | None = None) -> Compiled:
    """Compile the objects that belong to ``gateway`` (``ns/name``) into a routing config.

    ``generated_secrets`` maps endpoint keys to the secrets generated for endpoints that name
    none (kept by the caller: a file in standalone mode, an owned Secret in a cluster).
    """
    generated_secrets = generated_secrets or {}
    items = list(resources)
    namespace = gateway.split("/", 1)[0]
    problems: list[Problem] = []

    gw = next((r for r in items if isinstance(r, Gateway) and r.meta.key == gateway), None)
    default_timeout = gw.default_timeout if gw else None
    default_schedule = gw.default_retry_schedule if gw else None
    secrets = {r.meta.key: r for r in items if isinstance(r, Secret)}

    endpoints: dict[str, EndpointConfig] = {}
    keys: dict[str, tuple[str, ...]] = {}
    for ep in (r for r in items if isinstance(r, Endpoint) and _belongs(r, gateway)):
        secret = _signing_secret(ep, secrets, generated_secrets, problems)
        if secret is None:
            continue
        keys[ep.meta.key] = secret
        endpoints[ep.meta.key] = EndpointConfig(
            key=ep.meta.key,
            url=ep.url,
            timeout=ep.timeout or default_timeout or DEFAULT_TIMEOUT,
            retry_schedule=ep.retry_schedule or default_schedule or DEFAULT_RETRY_SCHEDULE,
            headers=dict(ep.headers),
            rate_limit=RateLimitConfig(ep.rate_limit.per_second, ep.rate_limit.burst)
            if ep.rate_limit else None,
            max_in_flight=ep.max_in_flight,
            paused=ep.paused,
        )

    all_endpoint_keys = {r.meta.key for r in items if isinstance(r, Endpoint)}
    subs: list[SubscriptionConfig] = []
    for sub in (r for r in items if isinstance(r, Subscription) and r.meta.namespace == namespace):
        target = f"{namespace}/{sub.endpoint}"
        if target not in endpoints:
            if target in all_endpoint_keys:
                continue  # it belongs to another gateway, or its own problem is reported
            problems.append(sub.meta.problem(
                f"endpoint {sub.endpoint!r} does not exist in namespace {namespace!r}",
                field="spec.endpointRef.name", reason="EndpointNotFound",
                hint="create the WebhookEndpoint or fix the name"))
            continue
        subs.append(SubscriptionConfig(
            key=sub.meta.key, endpoint=target, event_types=sub.event_types,
            filter=sub.filter, source=f"{namespace}/{sub.source}" if sub.source else None))

    by_object: dict[str, list[Problem]] = {}
    for p in problems:
        by_object.setdefault(f"{p.kind} {p.namespace}/{p.name}", []).append(p)
    config = RoutingConfig(gateway=gateway, endpoints=endpoints,
                           subscriptions=tuple(subs),
                           allow_cidrs=gw.allow_cidrs if gw else ())
    return Compiled(config=config, signing_keys=keys, problems=tuple(problems),
                    by_object={k: tuple(v) for k, v in by_object.items()})


def _signing_secret(ep: Endpoint, secrets: Mapping[str, Secret],
                    generated: Mapping[str, str], problems: list[Problem]
                    ) -> tuple[str, ...] | None:
    if ep.secret_ref is None:
        value = generated.get(ep.meta.key)
        if value is None:
            problems.append(ep.meta.problem(
                "no signing secret was generated for this endpoint", field="spec.secretRef",
                reason="SecretMissing", hint="restart so Hookgate can generate one"))
            return None
        return (value,)
    ref = ep.secret_ref
    secret = secrets.get(f"{ep.meta.namespace}/{ref.name}")
    if secret is None or ref.key not in secret.data:
        what = (f"Secret {ref.name!r} has no key {ref.key!r}" if secret
                else f"Secret {ref.name!r} does not exist in namespace {ep.meta.namespace!r}")
        problems.append(ep.meta.problem(
            what, field="spec.secretRef", reason="SecretMissing",
            hint="create the Secret with a whsec_ value, or drop secretRef to have one generated"))
        return None
    # Several secrets separated by whitespace are all active (rotation): each one signs.
    values = tuple(secret.data[ref.key].split())
    bad = [v for v in values if not v.startswith("whsec_")]
    if not values or bad:
        problems.append(ep.meta.problem(
            f"Secret {ref.name!r} key {ref.key!r} must hold whsec_ secrets",
            field="spec.secretRef", reason="SecretInvalid",
            hint="a signing secret is 'whsec_' followed by base64 of 24 to 64 random bytes"))
        return None
    return values
