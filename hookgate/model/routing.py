"""The compiled routing config: what a deliverer needs to route and deliver, nothing more.

The operator publishes it as JSON in a ConfigMap and ``hookgate run`` builds it from files;
both go through :func:`hookgate.model.compiler.compile_config`, so a deliverer cannot tell
the two apart. It carries no secrets: signing keys travel separately as :data:`SigningKeys`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from hookgate.model.expressions import (
    ExpressionError,
    compile_expression,
    evaluate_filter,
    ordering_key,
)

__all__ = [
    "BrokerConfig",
    "CircuitBreakerConfig",
    "EndpointConfig",
    "RateLimitConfig",
    "Route",
    "Router",
    "RoutingConfig",
    "SigningKeys",
    "SourceConfig",
    "SubscriptionConfig",
    "glob_to_regex",
]

FORMAT_VERSION = 1

#: Endpoint key -> active signing secrets (``whsec_...``), newest first.
SigningKeys = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    failure_threshold: int = 5  # consecutive failed attempts that open the circuit
    cooldown: float = 30.0  # seconds the circuit stays open before one trial delivery


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    key: str
    url: str
    timeout: float
    retry_schedule: tuple[float, ...]
    headers: Mapping[str, str] = field(default_factory=dict)
    rate_limit: RateLimitConfig | None = None
    max_in_flight: int = 64
    paused: bool = False
    # On by default: a receiver that fails every request is not hammered. None disables it.
    circuit_breaker: CircuitBreakerConfig | None = CircuitBreakerConfig()
    ordering_key: str | None = None  # CEL expression; events with one key go out in order
    auto_disable_after: float | None = None  # seconds of continuous failure before pausing


@dataclass(frozen=True, slots=True)
class SubscriptionConfig:
    key: str
    endpoint: str
    event_types: tuple[str, ...]
    filter: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """A message broker a source consumes, instead of serving an HTTP path.

    ``settings`` are the fields of ``spec.broker.<kind>`` as written in the manifest (camel
    case, JSON values) without the references to Secrets; what those Secrets hold (URLs
    with passwords, keys) travels with the other source secrets (``Compiled.source_secrets``).
    """

    kind: str  # kafka | sqs | pubsub | amqp | nats | redis
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """An inbound source: an HTTP path where senders post and how their requests are
    verified, or (``broker`` set, ``path`` empty) a message broker the gateway consumes.

    The secret it is verified with travels separately (``Compiled.source_secrets``).
    """

    key: str  # "namespace/name" of the WebhookSource; the source of its events
    path: str  # the exact request path on the ingest listener ("" for a broker source)
    scheme: str  # github | stripe | shopify | standard-webhooks | hmac | basic | api-key
    header: str | None = None  # hmac: signature header; api-key: key header
    algorithm: str = "sha256"  # hmac only
    encoding: str = "hex"  # hmac only
    prefix: str = ""  # hmac only: text before the signature, e.g. "sha256="
    tolerance: float = 300.0  # seconds; stripe and standard-webhooks (signed timestamps)
    event_type_header: str | None = None
    event_type_field: str | None = None  # dotted path into the JSON payload, e.g. data.kind
    event_type_prefix: str = ""
    keep_headers: tuple[str, ...] = ()
    broker: BrokerConfig | None = None  # set for a broker source
    # broker sources: where the idempotency key comes from (unset: the broker's message id)
    idempotency_header: str | None = None
    idempotency_field: str | None = None


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    gateway: str
    endpoints: Mapping[str, EndpointConfig] = field(default_factory=dict)
    subscriptions: tuple[SubscriptionConfig, ...] = ()
    allow_cidrs: tuple[str, ...] = ()
    operations_endpoint: str | None = None  # gets hookgate.* operational events
    sources: Mapping[str, SourceConfig] = field(default_factory=dict)  # by source key

    def to_json(self) -> str:
        doc = {
            "version": FORMAT_VERSION,
            "gateway": self.gateway,
            "allowCIDRs": list(self.allow_cidrs),
            "operationsEndpoint": self.operations_endpoint,
            "endpoints": [asdict(e) for e in sorted(self.endpoints.values(), key=_key)],
            "subscriptions": [asdict(s) for s in sorted(self.subscriptions, key=_key)],
            "sources": [asdict(s) for s in sorted(self.sources.values(), key=_key)],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> RoutingConfig:
        doc: dict[str, Any] = json.loads(text)
        if doc.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"routing config format {doc.get('version')!r} is not {FORMAT_VERSION}; "
                "run a deliverer of the same Hookgate version as the operator")
        endpoints = {}
        for e in doc["endpoints"]:
            rate = e.get("rate_limit")
            breaker = e.get("circuit_breaker", {})
            endpoints[e["key"]] = EndpointConfig(
                **{**e, "retry_schedule": tuple(e["retry_schedule"]),
                   "rate_limit": RateLimitConfig(**rate) if rate else None,
                   "circuit_breaker": CircuitBreakerConfig(**breaker)
                   if breaker is not None else None})
        subs = tuple(SubscriptionConfig(**{**s, "event_types": tuple(s["event_types"])})
                     for s in doc["subscriptions"])
        sources = {s["key"]: SourceConfig(**{
            **s, "keep_headers": tuple(s["keep_headers"]),
            "broker": BrokerConfig(**s["broker"]) if s.get("broker") else None})
            for s in doc.get("sources", ())}
        return cls(gateway=doc["gateway"], endpoints=endpoints, subscriptions=subs,
                   allow_cidrs=tuple(doc.get("allowCIDRs", ())),
                   operations_endpoint=doc.get("operationsEndpoint"), sources=sources)


def _key(x: EndpointConfig | SubscriptionConfig | SourceConfig) -> str:
    return x.key


def glob_to_regex(pattern: str) -> str:
    """Event-type glob to regex: ``*`` matches any run of characters, ``?`` one character.

    ``order.*`` matches ``order.created`` and ``order.line.added``; ``*`` matches every type.
    """
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)


class Router:
    """Answers "which endpoints get this event?" for one routing config.

    Exact event types are looked up in a dict; only glob patterns are matched, all at once
    through one combined regex, so routing stays fast with thousands of subscriptions.
    Results are cached per (type, source) because an event type set is small in practice.
    """

    def __init__(self, config: RoutingConfig) -> None:
        self.config = config
        self._exact: dict[str, list[SubscriptionConfig]] = {}
        self._globs: list[tuple[str, SubscriptionConfig]] = []
        for sub in config.subscriptions:
            for pattern in sub.event_types:
                if "*" in pattern or "?" in pattern:
                    self._globs.append((pattern, sub))
                else:
                    self._exact.setdefault(pattern, []).append(sub)
        unique = sorted({p for p, _ in self._globs})
        self._pattern_index = {p: i for i, p in enumerate(unique)}
        self._combined = re.compile("|".join(f"(?P<g{i}>{glob_to_regex(p)})$"
                                             for i, p in enumerate(unique))) if unique else None
        self._compiled = [re.compile(glob_to_regex(p) + "$") for p in unique]
        self._cache: dict[tuple[str, str | None], tuple[SubscriptionConfig, ...]] = {}
        # CEL programs, compiled once per config; the compiler already refused bad ones, so
        # one that still fails (a config built by hand) just never matches.
        self._filters: dict[str, Any] = {}
        for sub in config.subscriptions:
            if sub.filter:
                try:
                    self._filters[sub.key] = compile_expression(sub.filter)
                except ExpressionError:
                    self._filters[sub.key] = None
        self._ordering: dict[str, Any] = {}
        for ep in config.endpoints.values():
            if ep.ordering_key:
                try:
                    self._ordering[ep.key] = compile_expression(ep.ordering_key)
                except ExpressionError:
                    self._ordering[ep.key] = None

    def subscriptions(self, event_type: str, source: str | None = None
                      ) -> tuple[SubscriptionConfig, ...]:
        """Subscriptions whose event types match, before any filter is applied."""
        cached = self._cache.get((event_type, source))
        if cached is not None:
            return cached
        matched = list(self._exact.get(event_type, ()))
        if self._combined is not None and self._combined.match(event_type):
            hit = {p for p, rx in zip(self._pattern_index, self._compiled, strict=True)
                   if rx.match(event_type)}
            matched.extend(s for p, s in self._globs if p in hit)
        result = tuple(s for s in matched if s.source is None or s.source == source)
        if len(self._cache) < 10_000:
            self._cache[(event_type, source)] = result
        return result

    def endpoints(self, event_type: str, source: str | None = None) -> list[str]:
        """Keys of the endpoints that get a copy: each at most once, in a stable order."""
        seen: dict[str, None] = {}
        for sub in self.subscriptions(event_type, source):
            if sub.endpoint in self.config.endpoints:
                seen.setdefault(sub.endpoint, None)
        return list(seen)

    def route(self, event_type: str, source: str | None, variables: Mapping[str, Any]
              ) -> Route:
        """Endpoints that get this event once subscription filters are applied, with each
        ordered endpoint's ordering key.

        ``variables`` are the event's CEL variables (see :func:`expressions.activation`). A
        filter that fails to evaluate counts as no match and is reported in ``errors``; an
        ordering key that fails leaves that delivery unordered, also reported.
        """
        seen: dict[str, None] = {}
        errors: list[tuple[str, str]] = []
        for sub in self.subscriptions(event_type, source):
            if sub.endpoint not in self.config.endpoints or sub.endpoint in seen:
                continue
            if sub.filter:
                program = self._filters.get(sub.key)
                try:
                    if program is None:
                        raise ExpressionError("the filter does not compile")
                    if not evaluate_filter(program, variables):
                        continue
                except ExpressionError as exc:
                    errors.append((sub.key, str(exc)))
                    continue
            seen.setdefault(sub.endpoint, None)
        keys: dict[str, str] = {}
        for endpoint in seen:
            if endpoint not in self._ordering:
                continue
            program = self._ordering[endpoint]
            try:
                if program is None:
                    raise ExpressionError("the ordering key does not compile")
                keys[endpoint] = ordering_key(program, variables)
            except ExpressionError as exc:
                errors.append((endpoint, f"ordering key: {exc}"))
        return Route(endpoints=tuple(seen), ordering_keys=keys, errors=tuple(errors))


@dataclass(frozen=True, slots=True)
class Route:
    """Where one event goes: see :meth:`Router.route`."""

    endpoints: tuple[str, ...]
    ordering_keys: Mapping[str, str] = field(default_factory=dict)
    # (subscription or endpoint key, what failed) for each expression that could not run
    errors: tuple[tuple[str, str], ...] = ()
