"""Skip or fail when a test cannot run here: one rule, decided by the ``CI`` variable.

On a workstation a missing server, tool or library skips the test with a message saying how
to install it. In CI it fails the test: a green CI must mean the tests ran, and a skipped
queue backend or broker would pass for a tested one.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["in_ci", "unavailable"]

_NOT_SET = ("", "0", "false", "no")


def in_ci() -> bool:
    """``CI`` counts as set when it is non-empty and not 0, false or no (any case)."""
    return os.environ.get("CI", "").strip().lower() not in _NOT_SET


def unavailable(reason: str) -> NoReturn:
    """Skip the test (fail it in CI) because of ``reason``, which says how to install what
    is missing."""
    if in_ci():
        pytest.fail(f"{reason} (CI={os.environ.get('CI')!r}: a missing dependency is a "
                    "failure in CI)", pytrace=False)
    pytest.skip(reason)
