"""Problems: what was wrong with a resource, where, and what to do about it.

Every error a user can cause with a manifest is a :class:`Problem`. The same value is
printed by ``hookgate run`` and ``hookgate validate`` and becomes a ``Ready=False``
condition in the operator, so the wording is written once, here, for all three.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ManifestError", "Problem"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one object.

    ``reason`` is a CamelCase word for machines (condition reasons, JSON output);
    ``message`` says what was wrong and ``hint`` what to do about it.
    """

    message: str
    reason: str = "Invalid"
    hint: str = ""
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    field: str | None = None
    file: str | None = None
    line: int | None = None

    @property
    def subject(self) -> str | None:
        """``Kind namespace/name`` of the object the problem is about, when known."""
        if self.kind is None:
            return None
        ident = f"{self.namespace}/{self.name}" if self.namespace else (self.name or "<unnamed>")
        return f"{self.kind} {ident}"

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            parts.append(f"{self.file}:{self.line}" if self.line else self.file)
        if self.subject:
            parts.append(self.subject)
        if self.field:
            parts.append(self.field)
        text = ": ".join([*parts, self.message])
        return f"{text} ({self.hint})" if self.hint else text

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


class ManifestError(Exception):
    """Raised when manifests cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
