"""The ``hookgate`` command. Subcommands are verbs; every flag has a ``HOOKGATE_*`` variable.

Server commands (the processes) are in :mod:`hookgate.cli.server`, client commands (talking
to a running gateway, checking manifests) in :mod:`hookgate.cli.client`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from hookgate import __version__
from hookgate.cli import client, server
from hookgate.extras import MissingExtra

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hookgate", description="Hookgate webhook gateway.")
    p.add_argument("--version", action="version", version=f"hookgate {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server.add_commands(sub)
    client.add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except MissingExtra as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
