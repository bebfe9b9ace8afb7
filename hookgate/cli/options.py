"""What every ``hookgate`` command shares: ``HOOKGATE_*`` defaults and the common flags."""

from __future__ import annotations

import argparse
import os

__all__ = ["DEFAULT_URL", "env", "log_flags"]

DEFAULT_URL = "http://127.0.0.1:8080"


def env(name: str, default: str | None = None) -> str | None:
    """The value of ``HOOKGATE_<name>``, else ``default``."""
    return os.environ.get(f"HOOKGATE_{name}", default)


def log_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default=env("LOG_LEVEL", "info"),
                   choices=("debug", "info", "warning", "error"))
    p.add_argument("--log-format", default=env("LOG_FORMAT", "auto"),
                   choices=("auto", "text", "json"),
                   help="auto: text on a terminal, JSON lines otherwise")
