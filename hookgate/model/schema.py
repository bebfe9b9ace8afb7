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
    _Walker(ctx).visit(_root(str(kind)), obj, "")
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


# --- the structural walk ---------------------------------------------------------------


class _Walker:
    """Walks a value alongside its schema: defaults, structural checks, then CEL rules.

    Same order as the API server: defaults are applied before validation, and a node's
    CEL rules run only when nothing beneath it broke the schema (a rule like
    ``duration(x)`` over a malformed duration would only repeat that error, less clearly).
    """

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx

    def visit(self, schema: Schema, value: Any, path: str) -> None:
        before = self._broken()
        if not self._type_ok(schema, value, path):
            return
        if isinstance(value, dict):
            self._object(schema, value, path)
        elif isinstance(value, list):
            self._array(schema, value, path)
        else:
            self._scalar(schema, value, path)
        if "enum" in schema and value not in schema["enum"]:
            allowed = ", ".join(json.dumps(e) for e in schema["enum"])
            self.ctx.add(path, f"Unsupported value: {_show(value)}: supported values: {allowed}",
                         f"use one of {allowed}")
        if self._broken() == before:
            self._rules(schema, value, path)

    def _broken(self) -> int:
        return self.ctx.broken

    def _type_ok(self, schema: Schema, value: Any, path: str) -> bool:
        if schema.get("x-kubernetes-int-or-string"):
            ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
            expected = "integer or string"
        else:
            expected = schema.get("type", "")
            ok = _is_type(expected, value) if expected else True
        if not ok:
            self.ctx.add(path, f"Invalid value: {_show(value)}: must be of type {expected}",
                         _about(schema) or f"write it as {_TYPE_NAMES.get(expected, expected)}")
        return ok

    def _object(self, schema: Schema, value: dict[str, Any], path: str) -> None:
        props: Mapping[str, Schema] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key in list(value):
            sub = props.get(key, extra if isinstance(extra, Mapping) else None)
            if sub is None:
                if not schema.get("x-kubernetes-preserve-unknown-fields"):
                    self._unknown(props, key, path)
            elif value[key] is None and not sub.get("nullable"):
                del value[key]  # the API server prunes nulls of non-nullable fields
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key in schema.get("required", []):
            if key not in value:
                self.ctx.add(_join(path, key), "Required value",
                             f"add {key}: {_about(props.get(key, {}))}".rstrip(": "))
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, Mapping) else None)
            if sub is not None and item is not None:
                self.visit(sub, item, _join(path, key))
        if len(value) > schema.get("maxProperties", len(value)):
            self.ctx.add(path, f"Too many: {len(value)}: must have at most "
                         f"{schema['maxProperties']} items", _about(schema))

    def _unknown(self, props: Mapping[str, Schema], key: str, path: str) -> None:
        close = difflib.get_close_matches(key, list(props), n=1)
        guess = f'; did you mean "{_join(path, close[0])}"?' if close else ""
        allowed = ", ".join(props) or "none"
        self.ctx.add(_join(path, key), f'unknown field "{_join(path, key)}"{guess}',
                     f"fields allowed in {path or 'the object'}: {allowed}")

    def _array(self, schema: Schema, value: list[Any], path: str) -> None:
        items = schema.get("items", {})
        for i, item in enumerate(value):
            if item is None and not items.get("nullable"):
                self.ctx.add(f"{path}[{i}]", "Invalid value: null: must not be empty",
                             _about(items))
            elif item is not None:
                self.visit(items, item, f"{path}[{i}]")
        if len(value) < schema.get("minItems", 0):
            self.ctx.add(path, f"should have at least {schema['minItems']} items", _about(schema))
        if len(value) > schema.get("maxItems", len(value)):
            self.ctx.add(path, f"Too many: {len(value)}: must have at most "
                         f"{schema['maxItems']} items", _about(schema))

    def _scalar(self, schema: Schema, value: Any, path: str) -> None:
        # the hint (the field's description) only when there is a problem: most values have none
        if isinstance(value, str):
            pattern = schema.get("pattern")
            hint = ""
            if pattern and not re.search(pattern, value):
                hint = "write a duration like 500ms, 15s, 5m or 1h30m" \
                    if pattern == DURATION_PATTERN else _about(schema)
                self.ctx.add(path, f"Invalid value: {_show(value)}: should match '{pattern}'",
                             hint)
            if len(value) < schema.get("minLength", 0):
                self.ctx.add(path, f"Invalid value: {_show(value)}: should be at least "
                             f"{schema['minLength']} chars long", hint or _about(schema))
            if len(value) > schema.get("maxLength", len(value)):
                self.ctx.add(path, f"Too long: may not be more than {schema['maxLength']} "
                             "characters", hint or _about(schema))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            for problem in _bounds(schema, value):
                self.ctx.add(path, f"Invalid value: {_show(value)}: {problem}", _about(schema))

    def _rules(self, schema: Schema, value: Any, path: str) -> None:
        for rule in schema.get("x-kubernetes-validations", []):
            if _holds(rule["rule"], value) is False:
                where = (path + str(rule.get("fieldPath", ""))).lstrip(".")
                message = rule.get("message") or f"failed rule: {rule['rule']}"
                self.ctx.add(where, message, self._explain(path), reason=RULE_VIOLATION)

    def _explain(self, path: str) -> str:
        """Where to read about a field: ``kubectl explain`` prints the CRD's descriptions."""
        target = ".".join([str(self.ctx.kind).lower(), *re.sub(r"\[\d+\]", "", path).split(".")])
        return f"see kubectl explain {target.rstrip('.')}"


def _is_type(expected: str, value: Any) -> bool:
    if isinstance(value, bool):
        return expected == "boolean"
    return _TYPE_CHECKS.get(expected, lambda v: True)(value)


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int),
    "number": lambda v: isinstance(v, int | float),
    "boolean": lambda v: False,
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


def _holds(rule: str, value: Any) -> bool | None:
    """True or False for a rule over ``self``; None when it cannot be evaluated offline."""
    program = _program(rule)
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
