"""Optional extras: what to install when a command or a source needs one that is missing."""

from __future__ import annotations

import importlib

__all__ = ["MissingExtra", "missing_extra", "require_extra"]


class MissingExtra(ImportError):
    """A module that an optional extra brings is not installed; ``str()`` says what to
    install."""


def missing_extra(what: str, extra: str, exc: ImportError) -> str:
    """``what`` cannot run without ``extra``: the message naming the pip command."""
    return (f"{what} needs {exc.name or exc}, which is not installed: "
            f"pip install 'hookgate[{extra}]'")


def require_extra(extra: str, *modules: str, what: str) -> None:
    """Import ``modules`` or raise :class:`MissingExtra` naming ``extra``."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingExtra(missing_extra(what, extra, exc)) from None
