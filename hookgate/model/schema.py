"""Placeholder until the CRD schemas land: accepts every object unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hookgate.model.problems import Problem

__all__ = ["check"]


def check(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    return dict(doc), []
