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

__all__ = [
    "EndpointConfig",
    "RateLimitConfig",
    "Router",
    "RoutingConfig",
    "SigningKeys",
    "SubscriptionConfig",
    "glob_to_regex",
]

FORMAT_VERSION = 1

#: Endpoint key -> active signing secrets (``whsec_...``), newest first.
SigningKeys = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class RateLimitConfig:
    per_second: float
    burst: int


@dataclass(frozen=True)
class EndpointConfig:
    key: str
    url: str
    timeout: float
    retry_schedule: tuple[float, ...]
    headers: Mapping[str, str] = field(default_factory=dict)
    rate_limit: RateLimitConfig | None = None
    max_in_flight: int = 64
    paused: bool = False


@dataclass(frozen=True)
class SubscriptionConfig:
    key: str
    endpoint: str
    event_types: tuple[str, ...]
    filter: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class RoutingConfig:
    gateway: str
    endpoints: Mapping[str, EndpointConfig] = field(default_factory=dict)
    subscriptions: tuple[SubscriptionConfig, ...] = ()
    allow_cidrs: tuple[str, ...] = ()

    def to_json(self) -> str:
        doc = {
            "version": FORMAT_VERSION,
            "gateway": self.gateway,
            "allowCIDRs": list(self.allow_cidrs),
            "endpoints": [asdict(e) for e in sorted(self.endpoints.values(), key=_key)],
            "subscriptions": [asdict(s) for s in sorted(self.subscriptions, key=_key)],
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
            endpoints[e["key"]] = EndpointConfig(
                **{**e, "retry_schedule": tuple(e["retry_schedule"]),
                   "rate_limit": RateLimitConfig(**rate) if rate else None})
        subs = tuple(SubscriptionConfig(**{**s, "event_types": tuple(s["event_types"])})
                     for s in doc["subscriptions"])
        return cls(gateway=doc["gateway"], endpoints=endpoints, subscriptions=subs,
                   allow_cidrs=tuple(doc.get("allowCIDRs", ())))


def _key(x: EndpointConfig | SubscriptionConfig) -> str:
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
