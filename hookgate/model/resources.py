"""Typed Hookgate resources, read from the dictionaries of Kubernetes manifests.

Shape rules (types, required fields, enums, patterns, defaults, cross-field rules) live in
the CRD schemas under ``crds/`` and are checked by :mod:`hookgate.model.schema` before an
object reaches this module. Parsing here only turns an already-valid dictionary into typed
values; it still reports a :class:`Problem` rather than raising ``KeyError`` if handed
something unexpected, so a bad object can never become a traceback.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hookgate.model.durations import parse_duration
from hookgate.model.problems import ManifestError, Problem

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "DEFAULT_RETRY_SCHEDULE",
    "DEFAULT_TIMEOUT",
    "KINDS",
    "Endpoint",
    "Gateway",
    "Location",
    "Meta",
    "RateLimit",
    "Resource",
    "Secret",
    "SecretKeyRef",
    "Source",
    "Subscription",
    "parse_resource",
]

API_GROUP = "hookgate.io"
API_VERSION = f"{API_GROUP}/v1alpha1"
KINDS = ("WebhookGateway", "WebhookEndpoint", "Subscription", "WebhookSource")

DEFAULT_TIMEOUT = 15.0
DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (
    0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 14 * 3600, 20 * 3600, 24 * 3600,
)
DEFAULT_MAX_IN_FLIGHT = 64


@dataclass(frozen=True, slots=True)
class Location:
    """Where an object was read from, for messages: a file and line, or nothing (API)."""

    file: str | None = None
    line: int | None = None
    # line of each field path ("spec.url", "spec.retry.schedule[1]") in the file
    lines: Mapping[str, int] = field(default_factory=dict, compare=False)

    def line_of(self, path: str | None) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rpartition(".")[0] if "." in path else path.rpartition("[")[0]
        return self.line


@dataclass(frozen=True, slots=True)
class Meta:
    kind: str
    namespace: str
    name: str
    generation: int = 0
    uid: str | None = None
    location: Location = field(default_factory=Location, compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def problem(self, message: str, *, field: str | None = None, reason: str = "Invalid",
                hint: str = "") -> Problem:
        return Problem(message=message, reason=reason, hint=hint, kind=self.kind,
                       namespace=self.namespace, name=self.name, field=field,
                       file=self.location.file, line=self.location.line_of(field))


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    name: str
    key: str = "secret"


@dataclass(frozen=True, slots=True)
class RateLimit:
    per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class Gateway:
    meta: Meta
    spec: Mapping[str, Any]
    default_timeout: float = DEFAULT_TIMEOUT
    default_retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    allow_cidrs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Endpoint:
    meta: Meta
    url: str
    gateway: str = "default"
    secret_ref: SecretKeyRef | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    retry_schedule: tuple[float, ...] | None = None
    rate_limit: RateLimit | None = None
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    paused: bool = False
    spec: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Subscription:
    meta: Meta
    endpoint: str
    event_types: tuple[str, ...]
    filter: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Source:
    meta: Meta
    spec: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Secret:
    meta: Meta
    data: Mapping[str, str]


Resource = Gateway | Endpoint | Subscription | Source | Secret


class _Reader:
    """Typed access to a manifest's fields that collects problems instead of raising."""

    def __init__(self, meta: Meta) -> None:
        self.meta = meta
        self.problems: list[Problem] = []

    def get(self, obj: Mapping[str, Any] | None, path: str, kind: type | tuple[type, ...],
            default: Any = None, *, required: bool = False, at: str = "spec") -> Any:
        """``obj[path]`` checked to be of ``kind``; ``at`` is where ``obj`` sits, for messages."""
        value: Any = obj
        for part in path.split(".") if "." in path else (path,):
            # a dict first: ABC checks cost a tenth of parsing 20,000 manifests
            if not (type(value) is dict or isinstance(value, Mapping)) or part not in value:
                if required:
                    self.problems.append(self.meta.problem(
                        "required field is missing", field=f"{at}.{path}" if at else path,
                        reason="FieldMissing"))
                return default
            value = value[part]
        if value is None:
            return default
        if type(value) is kind or (kind is Mapping and type(value) is dict):
            return value  # (a bool only where bool is asked for)
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
            self.problems.append(self.meta.problem(
                f"must be {_kind_name(kind)}, got {type(value).__name__}",
                field=f"{at}.{path}" if at else path))
            return default
        return value

    def duration(self, obj: Mapping[str, Any], path: str) -> float | None:
        text = self.get(obj, path, str)
        if text is None:
            return None
        try:
            return parse_duration(text)
        except ValueError as exc:
            self.problems.append(self.meta.problem(str(exc), field=f"spec.{path}"))
            return None

    def schedule(self, obj: Mapping[str, Any], path: str) -> tuple[float, ...] | None:
        items = self.get(obj, path, list)
        if items is None:
            return None
        out: list[float] = []
        for i, text in enumerate(items):
            try:
                out.append(parse_duration(text))
            except ValueError as exc:
                self.problems.append(self.meta.problem(str(exc), field=f"spec.{path}[{i}]"))
        if not out:
            self.problems.append(self.meta.problem(
                "retry schedule is empty", field=f"spec.{path}",
                hint="give at least one delay, e.g. [0s] for a single attempt"))
        return tuple(out)


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a mapping", Mapping: "a mapping"}
    return " or ".join(names.get(k, k.__name__) for k in _tuple(kind))


def parse_resource(doc: Mapping[str, Any], location: Location | None = None,
                   default_namespace: str = "default") -> Resource:
    """Turn one manifest into a typed resource, or raise :class:`ManifestError`."""
    location = location or Location()
    kind = doc.get("kind")
    md = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    assert isinstance(md, Mapping)
    meta = Meta(kind=str(kind), namespace=str(md.get("namespace") or default_namespace),
                name=str(md.get("name", "")), generation=int(md.get("generation") or 0),
                uid=md.get("uid"), location=location)
    if not md.get("name"):
        raise ManifestError([meta.problem("metadata.name is missing", field="metadata.name",
                                          reason="FieldMissing",
                                          hint="every object needs a name")])
    r = _Reader(meta)
    spec = r.get(doc, "spec", Mapping, {}, at="") if kind != "Secret" else {}
    resource: Resource
    if kind == "WebhookGateway":
        resource = Gateway(
            meta=meta, spec=spec,
            default_timeout=r.duration(spec, "defaults.timeout") or DEFAULT_TIMEOUT,
            default_retry_schedule=r.schedule(spec, "defaults.retry.schedule")
            or DEFAULT_RETRY_SCHEDULE,
            allow_cidrs=tuple(r.get(spec, "network.allowCIDRs", list, [])),
        )
    elif kind == "WebhookEndpoint":
        ref = r.get(spec, "secretRef", Mapping)
        rate = r.get(spec, "rateLimit", Mapping)
        headers = r.get(spec, "headers", Mapping, {})
        resource = Endpoint(
            meta=meta,
            url=r.get(spec, "url", str, "", required=True),
            gateway=r.get(spec, "gatewayRef.name", str, "default"),
            secret_ref=SecretKeyRef(
                name=r.get(ref, "name", str, "", required=True, at="spec.secretRef"),
                key=r.get(ref, "key", str, "secret", at="spec.secretRef"))
            if ref is not None else None,
            headers={str(k): str(v) for k, v in headers.items()},
            timeout=r.duration(spec, "timeout"),
            retry_schedule=r.schedule(spec, "retry.schedule"),
            rate_limit=RateLimit(
                per_second=float(r.get(rate, "perSecond", (int, float), 1, at="spec.rateLimit")),
                burst=int(r.get(rate, "burst", int, 1, at="spec.rateLimit")))
            if rate is not None else None,
            max_in_flight=r.get(spec, "maxInFlight", int, DEFAULT_MAX_IN_FLIGHT),
            paused=r.get(spec, "paused", bool, False),
            spec=spec,
        )
    elif kind == "Subscription":
        types = r.get(spec, "eventTypes", list, [], required=True)
        resource = Subscription(
            meta=meta,
            endpoint=r.get(spec, "endpointRef.name", str, "", required=True),
            event_types=tuple(str(t) for t in types),
            filter=r.get(spec, "filter", str),
            source=r.get(spec, "sourceRef.name", str),
        )
    elif kind == "WebhookSource":
        resource = Source(meta=meta, spec=spec)
    elif kind == "Secret":
        resource = Secret(meta=meta, data=_secret_data(doc, r))
    else:
        raise ManifestError([meta.problem(
            f"unknown kind {kind!r}", field="kind", reason="UnknownKind",
            hint=f"Hookgate reads {', '.join(KINDS)} and Secret")])
    if r.problems:
        raise ManifestError(r.problems)
    return resource


def _secret_data(doc: Mapping[str, Any], r: _Reader) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (r.get(doc, "data", Mapping, {}, at="") or {}).items():
        try:
            out[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            r.problems.append(r.meta.problem(
                "is not base64-encoded text", field=f"data.{key}",
                hint="use stringData for plain text values"))
    for key, value in (r.get(doc, "stringData", Mapping, {}, at="") or {}).items():
        out[str(key)] = str(value)
    return out
