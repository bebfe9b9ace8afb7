"""CEL expressions over events: subscription filters and endpoint ordering keys.

Both are compiled once per routing config (invalid ones are reported by the compiler with
reason ``InvalidFilter`` / ``InvalidOrderingKey`` and the position the CEL parser gives) and
evaluated per event at ingest, over these variables:

``type``    the event type (string)
``data``    the event payload (any JSON value)
``source``  the key of the WebhookSource it came through, or null for the ingest API
``id``      the event id
``time``    when it was accepted (a CEL timestamp)

Uses the ``cel`` package (common-expression-language), as the offline CRD validation does.
Pure: no I/O, no logging; callers decide what an evaluation error means.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from typing import Any

from hookgate.model.cel_engine import cel

__all__ = ["ExpressionError", "activation", "compile_expression", "evaluate",
           "evaluate_filter", "ordering_key"]


class ExpressionError(ValueError):
    """An expression that does not compile, or an evaluation that failed; ``str()`` says
    what and, for syntax errors, where (``line:column``)."""


_POSITION = re.compile(r"<input>:(\d+):(\d+): (.*?)(?:\n|$)")


def _describe_compile_error(expression: str, error: Exception) -> str:
    text = str(error)
    found = _POSITION.search(text)
    if found:
        line, column, what = found.groups()
        return f"{what.strip()} at line {line}, column {column}"
    return text.splitlines()[0] if text else type(error).__name__


@functools.lru_cache(maxsize=65_536)
def compile_expression(expression: str) -> cel.Program:
    """The compiled program, or :class:`ExpressionError` with the position of the mistake.

    One program per distinct expression: the compiler checks each one and the Router then
    asks for the same ones in the same order, so the cache must hold a whole config's (with
    4,096, a config of 5,000 filters compiled all of them twice, on every load). A program
    is about 1 KiB, and those of the live config are held by its Router anyway."""
    try:
        return cel.compile(expression)
    except Exception as exc:  # the library's errors share no base class beyond Exception
        raise ExpressionError(_describe_compile_error(expression, exc)) from None


def activation(*, type: str, data: Any, source: str | None, id: str,
               time: float) -> dict[str, Any]:
    """The variables an expression sees for one event."""
    return {"type": type, "data": data, "source": source, "id": id,
            "time": dt.datetime.fromtimestamp(time, dt.UTC)}


def evaluate(program: cel.Program, variables: Mapping[str, Any]) -> Any:
    """Run ``program``; any failure (missing field, type mismatch) is an ExpressionError."""
    try:
        return program.execute(cel.Context(variables=dict(variables)))
    except Exception as exc:
        if isinstance(exc, KeyError):
            raise ExpressionError(f"no such key: {exc.args[0]!r}") from None
        raise ExpressionError(str(exc).splitlines()[0] if str(exc)
                              else type(exc).__name__) from None


def evaluate_filter(program: cel.Program, variables: Mapping[str, Any]) -> bool:
    """Whether the filter holds; a non-boolean result is an ExpressionError."""
    result = evaluate(program, variables)
    if not isinstance(result, bool):
        raise ExpressionError(f"a filter must be true or false, got {type(result).__name__}")
    return result


def ordering_key(program: cel.Program, variables: Mapping[str, Any]) -> str:
    """An event's ordering key as text (strings as they are, other values as JSON-ish)."""
    result = evaluate(program, variables)
    if result is None:
        raise ExpressionError("the ordering key is null")
    if isinstance(result, str):
        return result
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, float) and result.is_integer():
        return str(int(result))
    return str(result)
