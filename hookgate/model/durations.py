"""Durations as Kubernetes users write them: ``500ms``, ``15s``, ``5m``, ``1h30m``."""

from __future__ import annotations

import re

__all__ = ["DURATION_PATTERN", "format_duration", "parse_duration"]

# The same pattern is used by the CRD schemas, so the API server and `hookgate run` agree.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


_DURATION = re.compile(DURATION_PATTERN)
# Texts already parsed: thousands of endpoints share a few timeouts and schedules.
_SECONDS: dict[str, float] = {}
_SECONDS_MAX = 4096


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ``ValueError`` saying what a duration looks like."""
    if type(text) is str:
        seconds = _SECONDS.get(text)
        if seconds is not None:
            return seconds
    if not isinstance(text, str) or not _DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration; write it like 500ms, 15s, 5m or 1h30m")
    seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(text))
    if type(text) is str and len(_SECONDS) < _SECONDS_MAX:
        _SECONDS[text] = seconds
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest duration text for ``seconds`` that :func:`parse_duration` reads back."""
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    if abs(seconds - whole) > 1e-9:
        return f"{seconds:g}s"
    out = ""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            out += f"{whole // size}{unit}"
            whole %= size
    return out or "0s"
