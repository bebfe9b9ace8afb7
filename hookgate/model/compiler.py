"""compile_config(resources) -> RoutingConfig: the one pure step from manifests to routing.

Standalone mode calls it on the files of a directory; the operator calls it on the objects of
a namespace. Problems with individual objects (a subscription naming a missing endpoint, a
missing secret) are returned beside the config instead of failing the whole gateway: the
operator shows them as conditions, ``hookgate run`` refuses to start on them.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hookgate.model.durations import parse_duration
from hookgate.model.expressions import ExpressionError, compile_expression
from hookgate.model.problems import Problem
from hookgate.model.resources import (
    DEFAULT_RETRY_SCHEDULE,
    DEFAULT_TIMEOUT,
    Endpoint,
    Gateway,
    Resource,
    Secret,
    Source,
    Subscription,
)
from hookgate.model.routing import (
    BrokerConfig,
    CircuitBreakerConfig,
    EndpointConfig,
    RateLimitConfig,
    RoutingConfig,
    SourceConfig,
    SubscriptionConfig,
)

__all__ = ["DEFAULT_AUTO_DISABLE_AFTER", "Compiled", "EndpointAuth", "compile_config",
           "endpoints_needing_secrets", "select_gateway"]


#: An endpoint failing without a break for this long is paused (5 days).
DEFAULT_AUTO_DISABLE_AFTER = 5 * 86400.0


@dataclass(frozen=True)
class EndpointAuth:
    """Credentials a deliverer presents to one endpoint, read from Secrets. Like signing
    keys they never enter the RoutingConfig (which is published in a ConfigMap)."""

    authorization: str | None = None  # the Authorization header value (basic or bearer)
    client_cert: str | None = None  # PEM certificate chain for mutual TLS
    client_key: str | None = None  # PEM private key for mutual TLS
    ca_bundle: str | None = None  # PEM CA certificates the server must chain to


@dataclass(frozen=True)
class Compiled:
    config: RoutingConfig
    signing_keys: Mapping[str, tuple[str, ...]]
    problems: tuple[Problem, ...] = ()
    # object key ("Kind ns/name") -> its problems, for per-object status
    by_object: Mapping[str, tuple[Problem, ...]] = field(default_factory=dict)
    # endpoint key -> credentials for the endpoint (only endpoints with spec.auth)
    endpoint_auth: Mapping[str, EndpointAuth] = field(default_factory=dict)
    # source key -> what its requests are verified with: {"secret": ...}, or
    # {"username": ..., "password": ...} for scheme basic. Never in the RoutingConfig.
    source_secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


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

    gw_spec: Mapping[str, Any] = gw.spec if gw else {}
    default_disable = _duration((gw_spec.get("defaults") or {}).get("autoDisableAfter"))
    endpoints: dict[str, EndpointConfig] = {}
    keys: dict[str, tuple[str, ...]] = {}
    auth: dict[str, EndpointAuth] = {}
    # Equal signing secrets, retry schedules and circuit breakers become one object each:
    # thousands of endpoints usually share a few, and the config lives as long as the process.
    shared: dict[object, Any] = {}
    for ep in (r for r in items if isinstance(r, Endpoint) and _belongs(r, gateway)):
        secret = _signing_secret(ep, secrets, generated_secrets, problems)
        if secret is None:
            continue
        policies = _policies(ep, problems)
        if policies is None:
            continue
        credentials, ok = _endpoint_auth(ep, secrets, problems)
        if not ok:
            continue
        key = ep.meta.key
        if credentials is not None:
            auth[key] = credentials
        disable = _duration(ep.spec.get("autoDisableAfter"))
        if disable is None:
            disable = default_disable if default_disable is not None \
                else DEFAULT_AUTO_DISABLE_AFTER
        keys[key] = shared.setdefault(secret, secret)
        endpoints[key] = EndpointConfig(
            key=key,
            url=ep.url,
            timeout=ep.timeout or default_timeout or DEFAULT_TIMEOUT,
            # parsed schedules are all floats, so equal ones are interchangeable
            retry_schedule=(ep.retry_schedule and shared.setdefault(ep.retry_schedule,
                                                                    ep.retry_schedule))
            or default_schedule or DEFAULT_RETRY_SCHEDULE,
            headers=dict(ep.headers),
            rate_limit=RateLimitConfig(ep.rate_limit.per_second, ep.rate_limit.burst)
            if ep.rate_limit else None,
            max_in_flight=ep.max_in_flight,
            paused=ep.paused,
            circuit_breaker=shared.setdefault(policies[0], policies[0]),
            ordering_key=policies[1],
            auto_disable_after=disable or None,  # 0s turns it off
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
        if sub.filter:
            try:
                compile_expression(sub.filter)
            except ExpressionError as exc:
                problems.append(sub.meta.problem(
                    f"the filter is not valid CEL: {exc}", field="spec.filter",
                    reason="InvalidFilter",
                    hint="e.g. data.amount > 100 && type.startsWith('order.'); the variables "
                         "are type, data, source, id and time"))
                continue
        subs.append(SubscriptionConfig(
            key=sub.meta.key, endpoint=endpoints[target].key, event_types=sub.event_types,
            filter=sub.filter, source=f"{namespace}/{sub.source}" if sub.source else None))

    operations = None
    ops_name = ((gw_spec.get("operations") or {}).get("endpointRef") or {}).get("name")
    if ops_name and gw is not None:
        operations = f"{namespace}/{ops_name}"
        if operations not in endpoints:
            problems.append(gw.meta.problem(
                f"the operations endpoint {ops_name!r} is not an endpoint of this gateway",
                field="spec.operations.endpointRef.name", reason="EndpointNotFound",
                hint="create a WebhookEndpoint of that name with gatewayRef naming this gateway"))
            operations = None

    sources, source_secrets = _sources(items, gateway, secrets, problems)

    by_object: dict[str, list[Problem]] = {}
    for p in problems:
        by_object.setdefault(f"{p.kind} {p.namespace}/{p.name}", []).append(p)
    config = RoutingConfig(gateway=gateway, endpoints=endpoints,
                           subscriptions=tuple(subs),
                           allow_cidrs=gw.allow_cidrs if gw else (),
                           operations_endpoint=operations, sources=sources)
    return Compiled(config=config, signing_keys=keys, problems=tuple(problems),
                    by_object={k: tuple(v) for k, v in by_object.items()},
                    endpoint_auth=auth, source_secrets=source_secrets)


# Headers a source may not keep: the gateway sets them on every delivery itself, or they
# describe one HTTP connection rather than the event.
_UNKEEPABLE = frozenset({
    "webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length",
    "content-encoding", "user-agent", "host", "connection", "keep-alive", "transfer-encoding",
    "te", "trailer", "upgrade", "proxy-authorization", "proxy-connection", "expect",
})
_TYPE_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-/]*$")


def _event_type_prefix(src: Source, problems: list[Problem]) -> str | None:
    """The source's event type prefix ("" for none), or None when it is unusable."""
    prefix = str((src.spec.get("eventType") or {}).get("prefix") or "")
    if prefix and not _TYPE_PREFIX.match(prefix):
        problems.append(src.meta.problem(
            f"event type prefix {prefix!r} would make invalid event types",
            field="spec.eventType.prefix",
            hint="use letters, digits and . _ : - /, starting with a letter or digit"))
        return None
    return prefix
_DEFAULT_TOLERANCE = 300.0


def _source_gateway(src: Source) -> str:
    ref = src.spec.get("gatewayRef")
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return f"{src.meta.namespace}/{name or 'default'}"


def _sources(items: list[Resource], gateway: str, secrets: Mapping[str, Secret],
             problems: list[Problem]
             ) -> tuple[dict[str, SourceConfig], dict[str, dict[str, str]]]:
    """The gateway's sources (HTTP paths and brokers) and their secrets."""
    configs: dict[str, SourceConfig] = {}
    values: dict[str, dict[str, str]] = {}
    owners: dict[str, Source] = {}  # path -> the source serving it
    mine = sorted((r for r in items if isinstance(r, Source) and _source_gateway(r) == gateway),
                  key=lambda r: r.meta.name)
    for src in mine:
        if src.spec.get("broker"):
            compiled = _broker_source(src, secrets, problems)
            if compiled is not None:
                configs[compiled[0].key], values[compiled[0].key] = compiled
            continue
        compiled = _source(src, secrets, problems)
        if compiled is None:
            continue
        config, secret = compiled
        owner = owners.get(config.path)
        if owner is not None:
            problems.append(src.meta.problem(
                f"path {config.path} is already served by WebhookSource {owner.meta.key}",
                field="spec.path", reason="PathConflict",
                hint="give each source of a gateway its own path"))
            continue
        owners[config.path] = src
        configs[config.key] = config
        values[config.key] = secret
    return configs, values


def _source(src: Source, secrets: Mapping[str, Secret], problems: list[Problem]
            ) -> tuple[SourceConfig, dict[str, str]] | None:
    """One HTTP source and its secret; None (with a problem) when it cannot be served."""
    ns, spec = src.meta.namespace, src.spec
    verify = spec.get("verify")
    if not isinstance(verify, Mapping) or not verify.get("scheme"):
        problems.append(src.meta.problem(
            "an HTTP source needs verify, saying how to check that requests come from the "
            "sender", field="spec.verify", reason="FieldMissing",
            hint="e.g. verify: {scheme: github, secretRef: {name: github-webhook}}"))
        return None
    scheme = str(verify["scheme"])
    header = verify.get("header")
    if scheme == "hmac" and not header:
        problems.append(src.meta.problem(
            "scheme hmac needs header, the request header that carries the signature",
            field="spec.verify.header", reason="FieldMissing"))
        return None
    secret = _source_secret(src, scheme, verify.get("secretRef") or {}, secrets, problems)
    if secret is None:
        return None
    event_type = spec.get("eventType") or {}
    prefix = _event_type_prefix(src, problems)
    if prefix is None:
        return None
    keep = tuple(str(h) for h in spec.get("keepHeaders") or ())
    reserved = [h for h in keep if h.lower() in _UNKEEPABLE]
    if reserved:
        problems.append(src.meta.problem(
            f"cannot keep {', '.join(reserved)}: the gateway sets these itself on every "
            "delivery", field="spec.keepHeaders", reason="ReservedHeader",
            hint="remove them from keepHeaders"))
        return None
    tolerance = _duration(verify.get("tolerance"))
    config = SourceConfig(
        key=src.meta.key,
        path=str(spec.get("path") or f"/in/{ns}/{src.meta.name}"),
        scheme=scheme,
        header=str(header) if header else None,
        algorithm=str(verify.get("algorithm") or "sha256"),
        encoding=str(verify.get("encoding") or "hex"),
        prefix=str(verify.get("prefix") or ""),
        tolerance=tolerance if tolerance is not None else _DEFAULT_TOLERANCE,
        event_type_header=event_type.get("header"),
        event_type_field=event_type.get("field"),
        event_type_prefix=prefix,
        keep_headers=keep,
    )
    return config, secret


BROKER_KINDS = ("kafka", "sqs", "pubsub", "amqp", "nats", "redis")


def _broker_source(src: Source, secrets: Mapping[str, Secret], problems: list[Problem]
                   ) -> tuple[SourceConfig, dict[str, str]] | None:
    """One broker source: its settings (references to Secrets left out) and what those
    Secrets hold (``url``, ``username``/``password``, TLS material, cloud credentials)."""
    broker = src.spec.get("broker") or {}
    kinds = [k for k in BROKER_KINDS if isinstance(broker.get(k), Mapping)]
    if len(kinds) != 1:
        problems.append(src.meta.problem(
            "broker takes exactly one of " + ", ".join(BROKER_KINDS), field="spec.broker"))
        return None
    kind = kinds[0]
    spec = dict(broker[kind])
    values: dict[str, str] = {}
    ok = True

    def read(field: str, name: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()
             ) -> None:
        nonlocal ok
        secret = secrets.get(f"{src.meta.namespace}/{name}")
        missing = [k for k in keys if secret is None or k not in secret.data]
        if secret is None or missing:
            what = (f"Secret {name!r} has no key {', '.join(map(repr, missing))}" if secret
                    else f"Secret {name!r} does not exist in namespace {src.meta.namespace!r}")
            problems.append(src.meta.problem(what, field=f"spec.broker.{kind}.{field}",
                                             reason="SecretMissing",
                                             hint="create the Secret or fix the reference"))
            ok = False
            return
        for k in (*keys, *optional):
            if k in secret.data:
                values[k] = secret.data[k].strip() if k != "credentials" else secret.data[k]

    def secret_ref(obj: Any) -> Mapping[str, Any]:
        ref = obj.get("secretKeyRef") or obj.get("secretRef") if isinstance(obj, Mapping) \
            else None
        return ref if isinstance(ref, Mapping) else {}

    if "urlFrom" in spec:  # amqp, redis
        ref = secret_ref(spec.pop("urlFrom"))
        key = str(ref.get("key") or "url")
        read("urlFrom", str(ref.get("name", "")), (key,))
        if key in values:
            values["url"] = values.pop(key) if key != "url" else values["url"]
    if "credentialsFrom" in spec:  # sqs, pubsub
        ref = secret_ref(spec.pop("credentialsFrom"))
        if kind == "sqs":
            read("credentialsFrom", str(ref.get("name", "")),
                 ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), ("AWS_SESSION_TOKEN",))
        else:
            key = str(ref.get("key") or "credentials.json")
            read("credentialsFrom", str(ref.get("name", "")), (key,))
            if key in values:
                values["credentials"] = values.pop(key)
    if kind == "kafka":
        sasl = spec.get("sasl")
        if isinstance(sasl, Mapping):
            read("sasl", str(secret_ref(sasl).get("name", "")), ("username", "password"))
            spec["sasl"] = {"mechanism": str(sasl.get("mechanism") or "SCRAM-SHA-512")}
        tls = spec.get("tls")
        if isinstance(tls, Mapping):
            name = secret_ref(tls).get("name")
            if name:
                read("tls", str(name), (), ("ca.crt", "tls.crt", "tls.key"))
            spec["tls"] = {}
    if not ok:
        return None
    event_type = src.spec.get("eventType") or {}
    prefix = _event_type_prefix(src, problems)
    if prefix is None:
        return None
    idem = src.spec.get("idempotencyKey") or {}
    config = SourceConfig(
        key=src.meta.key, path="", scheme="broker",
        event_type_header=event_type.get("header"),
        # a broker message's type is the payload's "type" field unless said otherwise
        event_type_field=event_type.get("field") or (None if event_type.get("header")
                                                     else "type"),
        event_type_prefix=prefix,
        keep_headers=tuple(str(h) for h in src.spec.get("keepHeaders") or ()),
        broker=BrokerConfig(kind=kind, settings=spec),
        idempotency_header=idem.get("header"),
        idempotency_field=idem.get("field"),
    )
    return config, values


def _source_secret(src: Source, scheme: str, ref: Mapping[str, Any],
                   secrets: Mapping[str, Secret], problems: list[Problem]
                   ) -> dict[str, str] | None:
    """What the source's requests are verified with, from its Secret. A trailing newline
    (``echo secret > file``) is not part of a value."""
    ns, name = src.meta.namespace, str(ref.get("name") or "")
    wanted = ("username", "password") if scheme == "basic" else (str(ref.get("key") or "secret"),)
    secret = secrets.get(f"{ns}/{name}")
    missing = [k for k in wanted if secret is None or k not in secret.data]
    if secret is None or missing:
        what = (f"Secret {name!r} has no key {', '.join(map(repr, missing))}" if secret
                else f"Secret {name!r} does not exist in namespace {ns!r}")
        hint = ("create the Secret with keys username and password" if scheme == "basic"
                else "create the Secret holding the secret the sender signs with, or fix "
                     "secretRef")
        problems.append(src.meta.problem(what, field="spec.verify.secretRef",
                                         reason="SecretMissing", hint=hint))
        return None
    values = {k: secret.data[k].rstrip("\r\n") for k in wanted}
    if scheme == "basic":
        return values
    value = values[wanted[0]]
    bad = not value.strip()
    if scheme == "standard-webhooks":
        bad = bad or not all(_is_hmac_secret(v) for v in value.split())
    if bad:
        problems.append(src.meta.problem(
            f"Secret {name!r} key {wanted[0]!r} " + (
                "must hold whsec_ secrets" if scheme == "standard-webhooks" else "is empty"),
            field="spec.verify.secretRef", reason="SecretInvalid",
            hint="a Standard Webhooks secret is 'whsec_' followed by base64"
            if scheme == "standard-webhooks" else "put the shared secret in it"))
        return None
    return {"secret": value}


def _is_hmac_secret(value: str) -> bool:
    if not value.startswith("whsec_"):
        return False
    try:
        return bool(base64.b64decode(value.removeprefix("whsec_"), validate=True))
    except binascii.Error:
        return False


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
    # whsec_ secrets sign with HMAC (v1); whsk_ keys with Ed25519 (v1a, Standard Webhooks).
    bad = [v for v in values if not (v.startswith("whsec_") or _is_ed25519_key(v))]
    if not values or bad:
        problems.append(ep.meta.problem(
            f"Secret {ref.name!r} key {ref.key!r} must hold whsec_ secrets (or whsk_ keys)",
            field="spec.secretRef", reason="SecretInvalid",
            hint="a signing secret is 'whsec_' followed by base64 of 24 to 64 random bytes; "
                 "an asymmetric one 'whsk_' followed by base64 of an Ed25519 private key"))
        return None
    return values


def _is_ed25519_key(value: str) -> bool:
    if not value.startswith("whsk_"):
        return False
    try:
        raw = base64.b64decode(value.removeprefix("whsk_"), validate=True)
    except binascii.Error:
        return False
    return len(raw) in (32, 64)  # a seed, or seed + public key as libsodium keeps it


def _duration(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return parse_duration(text)
    except ValueError:
        return None  # the schema check reports it


def _policies(ep: Endpoint, problems: list[Problem]
              ) -> tuple[CircuitBreakerConfig, str | None] | None:
    """The endpoint's circuit breaker and ordering key; None (with a problem) if invalid."""
    cb = ep.spec.get("circuitBreaker") or {}
    breaker = CircuitBreakerConfig(
        failure_threshold=int(cb.get("failureThreshold", 5)),
        cooldown=_duration(cb.get("cooldown")) or 30.0)
    key = (ep.spec.get("ordering") or {}).get("key")
    if key:
        try:
            compile_expression(key)
        except ExpressionError as exc:
            problems.append(ep.meta.problem(
                f"the ordering key is not valid CEL: {exc}", field="spec.ordering.key",
                reason="InvalidOrderingKey",
                hint="e.g. data.customerId; the variables are type, data, source, id and time"))
            return None
    return breaker, key or None


def _endpoint_auth(ep: Endpoint, secrets: Mapping[str, Secret], problems: list[Problem]
                   ) -> tuple[EndpointAuth | None, bool]:
    """Credentials for the endpoint (None without spec.auth), and False (with problems) if
    a Secret or key it names is missing."""
    spec = ep.spec.get("auth")
    if not spec:
        return None, True
    ok = True

    def value(section: str, name: str, key: str) -> str | None:
        nonlocal ok
        secret = secrets.get(f"{ep.meta.namespace}/{name}")
        if secret is None or key not in secret.data:
            what = (f"Secret {name!r} has no key {key!r}" if secret
                    else f"Secret {name!r} does not exist in namespace {ep.meta.namespace!r}")
            problems.append(ep.meta.problem(
                what, field=f"spec.auth.{section}", reason="SecretMissing",
                hint="create the Secret or fix the reference"))
            ok = False
            return None
        return secret.data[key]

    authorization: str | None = None
    if "basic" in spec:
        name = spec["basic"]["secretRef"]["name"]
        user, password = value("basic", name, "username"), value("basic", name, "password")
        if user is not None and password is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            authorization = f"Basic {token}"
    elif "bearer" in spec:
        ref = spec["bearer"]["secretRef"]
        bearer = value("bearer", ref["name"], ref.get("key", "token"))
        if bearer is not None:
            authorization = f"Bearer {bearer.strip()}"
    cert = key_pem = ca = None
    tls = spec.get("tls") or {}
    if "secretRef" in tls:
        name = tls["secretRef"]["name"]
        cert, key_pem = value("tls", name, "tls.crt"), value("tls", name, "tls.key")
    ca_from = tls.get("caFrom") or {}
    if "secretKeyRef" in ca_from:
        ref = ca_from["secretKeyRef"]
        ca = value("tls.caFrom", ref["name"], ref.get("key", "ca.crt"))
    elif "configMapKeyRef" in ca_from:
        problems.append(ep.meta.problem(
            "a CA bundle from a ConfigMap is not supported yet", field="spec.auth.tls.caFrom",
            reason="Unsupported", hint="put the CA bundle in a Secret and use secretKeyRef"))
        ok = False
    if not ok:
        return None, False
    return EndpointAuth(authorization=authorization, client_cert=cert, client_key=key_pem,
                        ca_bundle=ca), True
