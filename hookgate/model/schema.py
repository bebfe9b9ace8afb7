"""Offline validation of Hookgate manifests against the CRDs in ``crds/``.

``hookgate run`` and ``hookgate validate`` read the same YAML that ``kubectl apply`` takes,
so they must accept and reject exactly what the API server would. Rather than restate
the rules in Python, this module reads the CustomResourceDefinitions themselves and
applies their ``openAPIV3Schema`` the way the API server does: structural checks (types,
required fields, enums, patterns, bounds, unknown fields), schema defaults, and the CEL
``x-kubernetes-validations`` rules. Messages reuse the API server's wording where it has
one ("Required value", "should match", "unknown field"), so a table of bad objects can
be checked against both; each adds a hint taken from the field's own description.

CEL rules are evaluated with the ``cel`` package (common-expression-language, the Rust
CEL implementation). It lacks two Kubernetes library functions our CRDs use,
``isSorted()`` and ``isCIDR()``, which are supplied here in Python. A rule the library
cannot compile or evaluate is skipped, never reported as the user's mistake; see
:func:`unevaluable_rules`.

Pure apart from reading the CRD files once (cached).
"""

from __future__ import annotations

import base64
import binascii
import copy
import difflib
import functools
import ipaddress
import itertools
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hookgate.model.cel_engine import cel
from hookgate.model.durations import DURATION_PATTERN
from hookgate.model.problems import Problem
from hookgate.model.resources import API_GROUP, API_VERSION, KINDS

__all__ = ["check", "crd_dir", "crds", "unevaluable_rules"]

Schema = Mapping[str, Any]

SCHEMA_VIOLATION = "SchemaViolation"
RULE_VIOLATION = "RuleViolation"

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_SENTENCE_END = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?<=\.)\s+(?=[^a-z0-9])")
_TYPE_NAMES = {"object": "object", "array": "array", "string": "string",
               "integer": "integer", "number": "number", "boolean": "boolean"}


def crd_dir() -> Path:
    """The CRD files: packaged in the wheel as ``hookgate/crds``, else the repo's ``crds/``."""
    packaged = Path(__file__).resolve().parent.parent / "crds"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "crds"


@functools.cache
def crds() -> dict[str, dict[str, Any]]:
    """Every Hookgate CRD, by the kind it defines. Read once; callers must not mutate."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(crd_dir().glob("*.yaml")):
        # libyaml when PyYAML has it: a fifth of the time, on every start
        for doc in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader",
                                                                  yaml.SafeLoader)):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                out[doc["spec"]["names"]["kind"]] = doc
    missing = set(KINDS) - set(out)
    if missing:
        raise RuntimeError(f"Hookgate CRDs missing from {crd_dir()}: {', '.join(sorted(missing))}")
    return out


@functools.cache
def _schemas() -> dict[str, Schema]:
    """Kind -> the ``openAPIV3Schema`` of the version Hookgate serves."""
    version = API_VERSION.split("/", 1)[1]
    out: dict[str, Schema] = {}
    for kind, crd in crds().items():
        for v in crd["spec"]["versions"]:
            if v["name"] == version:
                out[kind] = v["schema"]["openAPIV3Schema"]
    return out


def check(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """Validate one manifest; returns a defaulted deep copy and every problem found.

    Hookgate kinds are checked against their CRD; v1 Secrets only for well-formed ``data``.
    """
    obj = _copy(dict(doc), {})
    md = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(md, Mapping)
    kind = obj.get("kind")
    ctx = _Context(kind=str(kind) if kind is not None else None,
                   namespace=_str_or_none(md.get("namespace")),
                   name=_str_or_none(md.get("name")))
    if obj.get("apiVersion") == "v1" and kind == "Secret":
        _check_secret(obj, ctx)
        return obj, ctx.problems
    schema = _schemas().get(str(kind))
    if schema is None:
        _unknown_kind(obj, ctx)
        return obj, ctx.problems
    if obj.get("apiVersion") != API_VERSION:
        ctx.add("apiVersion", f'no matches for kind "{kind}" in version "{obj.get("apiVersion")}"',
                f"Hookgate serves {kind} as apiVersion: {API_VERSION}")
        return obj, ctx.problems
    _check_metadata(md, ctx)
    _validator(str(kind)).visit(obj, "", ctx)
    return obj, ctx.problems


@functools.cache
def _root(kind: str) -> Schema:
    """The kind's schema with metadata left opaque: the API server checks it apart (as we do)."""
    schema = _schemas()[kind]
    opaque = {**schema["properties"]["metadata"], "x-kubernetes-preserve-unknown-fields": True}
    return {**schema, "properties": {**schema["properties"], "metadata": opaque}}


def unevaluable_rules() -> list[str]:
    """CEL rules in the CRDs that the offline library cannot compile (so are skipped)."""
    return [rule for rule in _all_rules() if _program(rule) is None]


# --- problems -------------------------------------------------------------------------


@dataclass
class _Context:
    kind: str | None
    namespace: str | None
    name: str | None
    problems: list[Problem] = field(default_factory=list)
    broken: int = 0  # how many of the problems are schema violations

    def add(self, path: str, message: str, hint: str = "",
            reason: str = SCHEMA_VIOLATION) -> None:
        self.broken += reason == SCHEMA_VIOLATION
        self.problems.append(Problem(message=message, reason=reason, hint=hint,
                                     kind=self.kind, namespace=self.namespace,
                                     name=self.name, field=path or None))


def _copy(value: Any, memo: dict[int, Any]) -> Any:
    """A deep copy of a manifest, as ``copy.deepcopy`` makes (aliases stay aliases), with
    mapping keys interned: thousands of manifests then share one "spec", one "url", ...
    while their objects are kept, instead of each holding its own."""
    if type(value) is dict:
        out = memo.get(id(value))
        if out is None:
            out = memo[id(value)] = {}
            for k, v in value.items():
                out[sys.intern(k) if type(k) is str else k] = _copy(v, memo)
        return out
    if type(value) is list:
        out = memo.get(id(value))
        if out is None:
            out = memo[id(value)] = []
            out.extend(_copy(v, memo) for v in value)
        return out
    if type(value) in _ATOMIC:
        return value
    return copy.deepcopy(value, memo)


_ATOMIC = frozenset({str, int, float, bool, type(None)})


def _str_or_none(value: Any) -> str | None:
    return str(value) if value is not None else None


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _about(schema: Schema) -> str:
    """The first sentence of a field's description, used as a hint."""
    text = " ".join(str(schema.get("description", "")).split())
    return _SENTENCE_END.split(text, maxsplit=1)[0]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- metadata, kinds, Secrets ----------------------------------------------------------


def _unknown_kind(obj: Mapping[str, Any], ctx: _Context) -> None:
    kind = obj.get("kind")
    close = difflib.get_close_matches(str(kind), KINDS, n=1)
    guess = f'; did you mean "{close[0]}"?' if close else ""
    ctx.add("kind", f'no matches for kind "{kind}" in version "{obj.get("apiVersion")}"{guess}',
            f"{API_GROUP} kinds are {', '.join(KINDS)}")


def _check_metadata(md: Mapping[str, Any], ctx: _Context) -> None:
    name = md.get("name")
    if name is None and md.get("generateName") is None:
        ctx.add("metadata.name", "Required value: name or generateName is required",
                "give the object a name")
    elif name is not None and not (isinstance(name, str) and len(name) <= 253
                                   and _DNS_SUBDOMAIN.match(name)):
        ctx.add("metadata.name",
                f"Invalid value: {_show(name)}: a lowercase RFC 1123 subdomain must consist of "
                "lower case alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character",
                "use a name like orders or acme-prod, at most 253 characters")
    namespace = md.get("namespace")
    if namespace is not None and not (isinstance(namespace, str) and len(namespace) <= 63
                                      and _DNS_LABEL.match(namespace)):
        ctx.add("metadata.namespace",
                f"Invalid value: {_show(namespace)}: a lowercase RFC 1123 label must consist of "
                "lower case alphanumeric characters or '-', and must start and end with an "
                "alphanumeric character", "use a namespace like shop, at most 63 characters")


def _check_secret(obj: Mapping[str, Any], ctx: _Context) -> None:
    """A Secret's ``data`` must be base64 and its keys valid; the rest is not Hookgate's."""
    for section in ("data", "stringData"):
        values = obj.get(section)
        if values is None:
            continue
        if not isinstance(values, Mapping):
            ctx.add(section, f"must be of type object, got {_show(values)}",
                    "give a mapping of key: value")
            continue
        for key, value in values.items():
            path = f"{section}.{key}"
            if not (isinstance(key, str) and len(key) <= 253 and _SECRET_KEY.match(key)):
                ctx.add(path, f"Invalid value: {_show(key)}: a valid config key must consist of "
                        "alphanumeric characters, '-', '_' or '.'",
                        "rename the key, e.g. secret or signing.key")
            if section == "data" and not _is_base64(value):
                ctx.add(path, "illegal base64 data: data values must be base64-encoded",
                        "put plain text under stringData instead, or base64-encode it")
            elif section == "stringData" and not isinstance(value, str):
                ctx.add(path, f"must be of type string, got {_show(value)}",
                        "quote the value")


def _is_base64(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


# --- the structural check, compiled once per kind --------------------------------------


@functools.cache
def _validator(kind: str) -> _Node:
    """The kind's schema as a tree of :class:`_Node`, built once per process: the checks
    of every schema node are read from the CRD once, instead of on every value checked."""
    return _Node.build(_root(kind), {})


class _Node:
    """One schema node, ready to check values: defaults, structural checks, then CEL rules.

    Same order as the API server: defaults are applied before validation, and a node's
    CEL rules run only when nothing beneath it broke the schema (a rule like
    ``duration(x)`` over a malformed duration would only repeat that error, less clearly).
    Everything here is read from the schema when the node is built and never changed, so
    one tree serves every document of its kind (and threads: a reload checks in one).
    """

    __slots__ = ("_schema", "about", "closed", "defaults", "enum", "enum_text", "expected",
                 "extra", "has_bounds", "is_type", "items", "max_items", "max_length",
                 "max_properties", "min_items", "min_length", "nullable", "pattern",
                 "pattern_hint", "pattern_re", "preserve", "props", "required", "rules",
                 "type_hint")

    _schema: Schema
    about: str
    nullable: bool
    expected: str
    is_type: Callable[[Any], bool]
    type_hint: str
    props: dict[str, _Node]
    extra: _Node | None
    preserve: bool
    defaults: tuple[tuple[str, Any, bool], ...]  # key, default, whether it is immutable
    required: tuple[tuple[str, str], ...]  # key, hint
    max_properties: int | None
    items: _Node | None
    min_items: int
    max_items: int | None
    pattern: str | None
    pattern_re: re.Pattern[str] | None
    pattern_hint: str
    min_length: int
    max_length: int | None
    has_bounds: bool
    enum: list[Any] | None
    enum_text: str
    # every value that passes this node is of a declared type (no untyped or
    # preserve-unknown-fields node beneath): what _Rule.fields relies on
    closed: bool
    rules: tuple[_Rule, ...]

    @classmethod
    def build(cls, schema: Schema, memo: dict[int, _Node]) -> _Node:
        node = memo.get(id(schema))
        if node is None:
            node = memo[id(schema)] = cls()
            node.closed = True  # until its children are known (a schema never nests itself)
            node._fill(schema, memo)
        return node

    def _fill(self, schema: Schema, memo: dict[int, _Node]) -> None:
        self._schema = schema  # for messages that list what the schema allows
        self.about = _about(schema)
        self.nullable = bool(schema.get("nullable"))
        if schema.get("x-kubernetes-int-or-string"):
            self.expected = "integer or string"
            self.is_type = _int_or_string
        else:
            self.expected = schema.get("type", "")
            self.is_type = _type_check(self.expected)
        self.type_hint = self.about or \
            f"write it as {_TYPE_NAMES.get(self.expected, self.expected)}"
        # objects
        props: Mapping[str, Schema] = schema.get("properties", {})
        self.props = {key: _Node.build(sub, memo) for key, sub in props.items()}
        extra = schema.get("additionalProperties")
        self.extra = _Node.build(extra, memo) if isinstance(extra, Mapping) else None
        self.preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        self.defaults = tuple((key, sub["default"], type(sub["default"]) in _ATOMIC)
                              for key, sub in props.items() if "default" in sub)
        self.required = tuple(
            (key, f"add {key}: {_about(props.get(key, {}))}".rstrip(": "))
            for key in schema.get("required", []))
        self.max_properties = schema.get("maxProperties")
        # arrays
        self.items = _Node.build(schema["items"], memo) if "items" in schema else None
        self.min_items = schema.get("minItems", 0)
        self.max_items = schema.get("maxItems")
        # scalars
        pattern = schema.get("pattern")
        self.pattern = pattern or None
        self.pattern_re = re.compile(pattern) if pattern else None
        self.pattern_hint = "write a duration like 500ms, 15s, 5m or 1h30m" \
            if pattern == DURATION_PATTERN else self.about
        self.min_length = schema.get("minLength", 0)
        self.max_length = schema.get("maxLength")
        self.has_bounds = "minimum" in schema or "maximum" in schema
        self.enum = schema.get("enum")
        self.enum_text = ", ".join(json.dumps(e) for e in schema.get("enum", ()))
        self.closed = bool(self.expected or schema.get("x-kubernetes-int-or-string")) \
            and not self.preserve and all(
                n.closed for n in (*self.props.values(), self.extra, self.items) if n)
        self.rules = tuple(
            _Rule(rule["rule"], _program(rule["rule"]), str(rule.get("fieldPath", "")),
                  rule.get("message") or f"failed rule: {rule['rule']}",
                  _fields_of_self(rule["rule"]) if self.closed else None)
            for rule in schema.get("x-kubernetes-validations", []))

    def visit(self, value: Any, path: str, ctx: _Context) -> None:
        before = ctx.broken
        if not self.is_type(value):
            ctx.add(path, f"Invalid value: {_show(value)}: must be of type {self.expected}",
                    self.type_hint)
            return
        if isinstance(value, dict):
            self._object(value, path, ctx)
        elif isinstance(value, list):
            self._array(value, path, ctx)
        else:
            self._scalar(value, path, ctx)
        if self.enum is not None and value not in self.enum:
            ctx.add(path, f"Unsupported value: {_show(value)}: supported values: "
                    f"{self.enum_text}", f"use one of {self.enum_text}")
        if self.rules and ctx.broken == before:
            self._rules(value, path, ctx)

    def _object(self, value: dict[str, Any], path: str, ctx: _Context) -> None:
        props, extra = self.props, self.extra
        for key in list(value):
            sub = props.get(key, extra)
            if sub is None:
                if not self.preserve:
                    _unknown(self._schema.get("properties", {}), key, path, ctx)
            elif value[key] is None and not sub.nullable:
                del value[key]  # the API server prunes nulls of non-nullable fields
        for key, default, atomic in self.defaults:
            if key not in value:
                value[key] = default if atomic else copy.deepcopy(default)
        for key, hint in self.required:
            if key not in value:
                ctx.add(_join(path, key), "Required value", hint)
        for key, item in value.items():
            sub = props.get(key, extra)
            if sub is not None and item is not None:
                sub.visit(item, f"{path}.{key}" if path else key, ctx)
        if self.max_properties is not None and len(value) > self.max_properties:
            ctx.add(path, f"Too many: {len(value)}: must have at most "
                    f"{self.max_properties} items", self.about)

    def _array(self, value: list[Any], path: str, ctx: _Context) -> None:
        items = self.items or _empty()
        for i, item in enumerate(value):
            if item is None and not items.nullable:
                ctx.add(f"{path}[{i}]", "Invalid value: null: must not be empty", items.about)
            elif item is not None:
                items.visit(item, f"{path}[{i}]", ctx)
        if len(value) < self.min_items:
            ctx.add(path, f"should have at least {self.min_items} items", self.about)
        if self.max_items is not None and len(value) > self.max_items:
            ctx.add(path, f"Too many: {len(value)}: must have at most "
                    f"{self.max_items} items", self.about)

    def _scalar(self, value: Any, path: str, ctx: _Context) -> None:
        # the hint (the field's description) only when there is a problem: most values have none
        if isinstance(value, str):
            hint = ""
            if self.pattern_re is not None and not self.pattern_re.search(value):
                hint = self.pattern_hint
                ctx.add(path, f"Invalid value: {_show(value)}: should match '{self.pattern}'",
                        hint)
            if len(value) < self.min_length:
                ctx.add(path, f"Invalid value: {_show(value)}: should be at least "
                        f"{self.min_length} chars long", hint or self.about)
            if self.max_length is not None and len(value) > self.max_length:
                ctx.add(path, f"Too long: may not be more than {self.max_length} "
                        "characters", hint or self.about)
        elif self.has_bounds and isinstance(value, int | float) and not isinstance(value, bool):
            for problem in _bounds(self._schema, value):
                ctx.add(path, f"Invalid value: {_show(value)}: {problem}", self.about)

    def _rules(self, value: Any, path: str, ctx: _Context) -> None:
        for rule in self.rules:
            if rule.holds(value) is False:
                ctx.add((path + rule.field_path).lstrip("."), rule.message,
                        _explain(ctx.kind, path), reason=RULE_VIOLATION)


@functools.cache
def _empty() -> _Node:
    """What an array without ``items`` checks its items with: nothing."""
    return _Node.build({}, {})


def _unknown(props: Mapping[str, Schema], key: str, path: str, ctx: _Context) -> None:
    close = difflib.get_close_matches(key, list(props), n=1)
    guess = f'; did you mean "{_join(path, close[0])}"?' if close else ""
    allowed = ", ".join(props) or "none"
    ctx.add(_join(path, key), f'unknown field "{_join(path, key)}"{guess}',
            f"fields allowed in {path or 'the object'}: {allowed}")


def _explain(kind: str | None, path: str) -> str:
    """Where to read about a field: ``kubectl explain`` prints the CRD's descriptions."""
    target = ".".join([str(kind).lower(), *re.sub(r"\[\d+\]", "", path).split(".")])
    return f"see kubectl explain {target.rstrip('.')}"


def _int_or_string(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _type_check(expected: str) -> Callable[[Any], bool]:
    """``value -> whether it is of the schema type``; a bool is only ever a boolean."""
    return _TYPE_CHECKS.get(expected, _not_bool) if expected else _any


def _any(value: Any) -> bool:
    return True


def _not_bool(value: Any) -> bool:
    return not isinstance(value, bool)


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


def _bounds(schema: Schema, value: float) -> Iterator[str]:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None:
        if schema.get("exclusiveMinimum") and value <= low:
            yield f"should be greater than {low}"
        elif value < low:
            yield f"should be greater than or equal to {low}"
    if high is not None:
        if schema.get("exclusiveMaximum") and value >= high:
            yield f"should be less than {high}"
        elif value > high:
            yield f"should be less than or equal to {high}"


# --- CEL -------------------------------------------------------------------------------


def _is_sorted(items: Any) -> bool:
    """Kubernetes' ``list.isSorted()``: each element no greater than the next."""
    return all(a <= b for a, b in itertools.pairwise(items))


def _is_cidr(text: Any) -> bool:
    """Kubernetes' ``isCIDR(string)``: an address, a slash and a prefix length (host bits
    may be set); zones and IPv4-mapped IPv6 addresses are refused, as Go's netip does."""
    if not isinstance(text, str) or "/" not in text or "%" in text:
        return False
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return not (isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped)


_FUNCTIONS: dict[str, Callable[..., Any]] = {"isSorted": _is_sorted, "isCIDR": _is_cidr}


@functools.cache
def _program(rule: str) -> cel.Program | None:
    try:
        return cel.compile(rule)
    except Exception:  # the library's parse errors have no common base class
        return None


_SELF = re.compile(r"\bself\b")
_SELF_FIELD = re.compile(r"\bself\.([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()")
#: results of rules over strings and lists of strings (durations, schedules, CIDRs), which
#: thousands of objects share; bounded, as values like URLs are all different
_RESULTS: dict[tuple[str, str | tuple[str, ...]], bool | None] = {}
_RESULTS_MAX = 4096


def _fields_of_self(rule: str) -> frozenset[str] | None:
    """The fields of ``self`` a rule reads, when it reads ``self`` only by selecting
    fields (``has(self.auth)``, ``self.url.startsWith(...)``); None when it uses ``self``
    itself (``size(self)``, ``self.all(...)``, ``self[k]``, ``self == x``)."""
    fields = _SELF_FIELD.findall(rule)
    return frozenset(fields) if len(fields) == len(_SELF.findall(rule)) else None


@dataclass(frozen=True, slots=True)
class _Rule:
    """One ``x-kubernetes-validations`` rule of a schema node, compiled."""

    rule: str
    program: cel.Program | None  # None when the offline library cannot compile it
    field_path: str
    message: str
    # the fields of self it reads, when it reads nothing else and the node's values are
    # all of declared (JSON) types: then the others need not be handed to CEL, which
    # converts every value it is given (38 us for an endpoint's spec, 5 us for its url)
    fields: frozenset[str] | None

    def holds(self, value: Any) -> bool | None:
        """True or False for the rule over ``value``; None when it cannot be evaluated."""
        kind = type(value)
        if kind is str or (kind is list and all(type(v) is str for v in value)):
            key = (self.rule, value if kind is str else tuple(value))
            if key in _RESULTS:
                return _RESULTS[key]
            result = _holds(self.program, value)
            if len(_RESULTS) < _RESULTS_MAX:
                _RESULTS[key] = result
            return result
        if self.fields is not None and kind is dict:
            value = {k: value[k] for k in self.fields if k in value}
        return _holds(self.program, value)


def _holds(program: cel.Program | None, value: Any) -> bool | None:
    """True or False for a rule (compiled by :func:`_program`) over ``self``; None when it
    cannot be evaluated offline."""
    if program is None:
        return None
    try:
        result = program.execute(cel.Context(variables={"self": value}, functions=_FUNCTIONS))
    except Exception:  # an unsupported function or type: the API server still checks it
        return None
    return result if isinstance(result, bool) else None


def _all_rules() -> list[str]:
    out: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, Mapping):
            out.extend(r["rule"] for r in node.get("x-kubernetes-validations", []))
            for v in node.values():
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)

    for schema in _schemas().values():
        collect(schema)
    return out
