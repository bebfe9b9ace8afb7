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
            value = loader.construct_document(node)
            if value is None:
                continue
            line = node.start_mark.line + 1
            if not isinstance(value, Mapping):
                problems.append(Problem("a manifest must be a mapping with apiVersion and kind",
                                        reason="NotAnObject", file=str(path), line=line))
                return
            lines = FieldLines.of(node, shapes)
            del node
            yield Document(value, Location(str(path), line, lines))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problems.append(Problem(f"invalid YAML: {getattr(exc, 'problem', None) or exc}",
                                reason="InvalidYAML", hint="fix the syntax at that line",
                                file=str(path), line=mark.line + 1 if mark else None))
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
