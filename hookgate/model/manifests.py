"""Reading manifests from files: the multi-document YAML that ``kubectl apply`` takes.

Each object is checked against the CRD schemas (:mod:`hookgate.model.schema`), then parsed
into a typed resource. Problems carry the file, the line of the offending field where YAML
tells us, the object and the field.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from hookgate.model import schema
from hookgate.model.problems import ManifestError, Problem
from hookgate.model.resources import API_GROUP, Location, Resource, parse_resource

__all__ = ["Document", "FieldLines", "load_paths", "manifest_files", "parse_documents",
           "read_documents"]

SUFFIXES = (".yaml", ".yml", ".json")
# field paths of a document, in order -> their index: shared by documents of one shape
_Shapes = dict[tuple[str, ...], dict[str, int]]
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Document:
    """One YAML document and where it came from, down to the line of each field."""

    doc: Mapping[str, Any]
    location: Location


def manifest_files(paths: Iterable[str | Path]) -> list[Path]:
    """The YAML/JSON files named, directories searched recursively, in a stable order.

    Hidden files and directories are skipped: a ConfigMap mounted as a volume keeps each
    file twice, as ``NAME`` and in the ``..TIMESTAMP/`` directory it links to."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(
                f for f in p.rglob("*")
                if f.suffix in SUFFIXES and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            ))
        else:
            out.append(p)
    return out


def read_documents(path: Path) -> tuple[list[Document], list[Problem]]:
    """The documents of one file; unreadable files and YAML errors become problems."""
    problems: list[Problem] = []
    return list(_documents(path, problems, {})), problems


def _documents(path: Path, problems: list[Problem], shapes: _Shapes
               ) -> Iterator[Document]:
    """The documents of one file, one at a time, so that a large directory is never held
    as YAML all at once; an unreadable file or a YAML error is appended to ``problems``."""
    try:
        text = path.read_text()
    except OSError as exc:
        problems.append(Problem(f"cannot read file: {exc.strerror}", reason="FileUnreadable",
                                file=str(path)))
        return
    # libyaml's loader when PyYAML has it: three times faster on large config directories,
    # with the same marks (lines) on every node.
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            value, lines = _construct(loader, node, shapes)
            if value is None:
                continue
            line = node.start_mark.line + 1
            if not isinstance(value, Mapping):
                problems.append(Problem("a manifest must be a mapping with apiVersion and kind",
                                        reason="NotAnObject", file=str(path), line=line))
                return
            del node
            assert lines is not None
            yield Document(value, Location(str(path), line, lines))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problems.append(Problem(f"invalid YAML: {getattr(exc, 'problem', None) or exc}",
                                reason="InvalidYAML", hint="fix the syntax at that line",
                                file=str(path), line=mark.line + 1 if mark else None))
    except RecursionError:  # an anchor that contains its own alias, or nesting past reason
        problems.append(Problem(
            "invalid YAML: a value refers to itself (an anchor used inside its own value) or "
            "is nested too deeply", reason="InvalidYAML",
            hint="expand the alias, or flatten the structure", file=str(path)))
    finally:
        loader.dispose()


class FieldLines(Mapping[str, int]):
    """The line of each field path ("spec.url", "spec.retry.schedule[1]") of one document.

    Compact, as one is kept per object until the config is compiled: documents with the
    same fields share one path index (``shapes``), and the lines are an array of C ints.
    """

    __slots__ = ("_index", "_lines")

    def __init__(self, index: Mapping[str, int], lines: Iterable[int]) -> None:
        self._index = index
        self._lines = array("I", lines)

    @classmethod
    def of(cls, node: yaml.Node, shapes: _Shapes) -> FieldLines:
        paths: list[str] = []
        lines: list[int] = []
        _walk(node, "", paths, lines)
        return cls.shared(paths, lines, shapes)

    @classmethod
    def shared(cls, paths: list[str], lines: list[int], shapes: _Shapes) -> FieldLines:
        """The lines of ``paths``, with the index of documents of the same shape."""
        shape = tuple(paths)
        index = shapes.get(shape)
        if index is None:
            index = shapes[shape] = {p: i for i, p in enumerate(shape)}
        return cls(index, lines)

    def __getitem__(self, path: str) -> int:
        return self._lines[self._index[path]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def _walk(node: yaml.Node, prefix: str, paths: list[str], lines: list[int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            paths.append(path)
            lines.append(key.start_mark.line + 1)
            _walk(value, path, paths, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}[{i}]"
            paths.append(path)
            lines.append(item.start_mark.line + 1)
            _walk(item, path, paths, lines)


_STR, _SEQ, _MAP = (f"tag:yaml.org,2002:{t}" for t in ("str", "seq", "map"))
_PLAIN = frozenset(f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float"))


class _Unusual(Exception):
    """A document for PyYAML's own constructor: a tag beyond str, int, float, bool, null,
    map and seq (a timestamp, !!binary, a merge key ``<<``), a collection that is an alias
    (PyYAML keeps it one object), or a key that is not a scalar."""


def _construct(loader: yaml.SafeLoader, node: yaml.Node, shapes: _Shapes
               ) -> tuple[Any, FieldLines | None]:
    """The document's value, as ``loader.construct_document`` makes it, and the lines of
    its fields (None unless it is a mapping), in one walk over the nodes.

    Manifests are JSON-like; for them this walk is about three times cheaper than PyYAML's
    constructor, which dispatches every node through generators and its registries, plus
    a second walk for the lines. Anything else is left to PyYAML, exactly as before."""
    paths: list[str] = []
    lines: list[int] = []
    try:
        value = _Build(loader, paths, lines).node(node, "")
    except _Unusual:
        value = loader.construct_document(node)
        return value, FieldLines.of(node, shapes) if isinstance(value, Mapping) else None
    return value, FieldLines.shared(paths, lines, shapes) if isinstance(value, Mapping) \
        else None


class _Build:
    """One document's values and field lines, for :func:`_construct`."""

    __slots__ = ("constructors", "lines", "loader", "paths", "seen")

    def __init__(self, loader: yaml.SafeLoader, paths: list[str], lines: list[int]) -> None:
        self.loader = loader
        self.constructors = loader.yaml_constructors
        if any(self.constructors.get(tag) is not ours for tag, ours in _SAFE.items()):
            raise _Unusual  # someone registered their own: theirs it is
        self.paths, self.lines = paths, lines
        self.seen: set[int] = set()

    def scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        if tag in _PLAIN:
            return self.constructors[tag](self.loader, node)
        raise _Unusual

    def node(self, node: yaml.Node, prefix: str) -> Any:
        if type(node) is yaml.ScalarNode:
            return self.scalar(node)
        if id(node) in self.seen:
            raise _Unusual  # an alias
        self.seen.add(id(node))
        paths, lines = self.paths, self.lines
        if type(node) is yaml.MappingNode and node.tag == _MAP:
            out: dict[Any, Any] = {}
            for key, value in node.value:
                if type(key) is not yaml.ScalarNode:
                    raise _Unusual
                k = self.scalar(key)
                path = f"{prefix}.{key.value}" if prefix else key.value
                paths.append(path)
                lines.append(key.start_mark.line + 1)
                out[k] = self.node(value, path)
            return out
        if type(node) is yaml.SequenceNode and node.tag == _SEQ:
            items: list[Any] = []
            for i, item in enumerate(node.value):
                path = f"{prefix}[{i}]"
                paths.append(path)
                lines.append(item.start_mark.line + 1)
                items.append(self.node(item, path))
            return items
        raise _Unusual


_SAFE = {_STR: yaml.SafeLoader.construct_yaml_str, _SEQ: yaml.SafeLoader.construct_yaml_seq,
         _MAP: yaml.SafeLoader.construct_yaml_map}


def _is_ours(doc: Mapping[str, Any]) -> bool:
    api = str(doc.get("apiVersion", ""))
    return api.split("/")[0] == API_GROUP or (api == "v1" and doc.get("kind") == "Secret")


def parse_documents(docs: Iterable[Document], default_namespace: str = "default"
                    ) -> tuple[list[Resource], list[Problem]]:
    """Check and parse documents; objects of other APIs (a Deployment, ...) are skipped."""
    resources: list[Resource] = []
    problems: list[Problem] = []
    for d in docs:
        if not _is_ours(d.doc):
            continue
        checked, found = schema.check(d.doc)
        if found:
            problems.extend(_locate(p, d, default_namespace) for p in found)
            continue
        try:
            resources.append(parse_resource(checked, d.location, default_namespace))
        except ManifestError as exc:
            problems.extend(_locate(p, d, default_namespace) for p in exc.problems)
    problems.extend(_duplicates(resources))
    return resources, problems


def _locate(p: Problem, d: Document, default_namespace: str) -> Problem:
    """The problem with its file, line and the namespace the object will land in."""
    namespace = p.namespace or (default_namespace if p.kind else None)
    return replace(p, file=d.location.file, line=d.location.line_of(p.field),
                   namespace=namespace)


def _duplicates(resources: list[Resource]) -> Iterator[Problem]:
    seen: dict[tuple[str, str], Resource] = {}
    for r in resources:
        ident = (r.meta.kind, r.meta.key)
        first = seen.setdefault(ident, r)
        if first is not r:
            where = first.meta.location
            yield r.meta.problem(
                f"is defined twice (first at {where.file}:{where.line})",
                reason="Duplicate", hint="give each object a unique name")


def load_paths(paths: Iterable[str | Path], default_namespace: str = "default"
               ) -> tuple[list[Resource], list[Problem]]:
    """Every Hookgate object (and Secret) in the files and directories named.

    Each document is checked and parsed as it is read and then dropped: only the typed
    resources are kept, never the whole directory as YAML."""
    problems: list[Problem] = []
    shapes: _Shapes = {}
    docs = (d for f in manifest_files(paths) for d in _documents(f, problems, shapes))
    resources, bad = parse_documents(docs, default_namespace)
    return resources, problems + bad
