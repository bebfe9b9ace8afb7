"""The CEL evaluator (the ``common-expression-language`` package), without its command line.

The package's ``__init__`` imports its interactive CLI, which pulls in prompt_toolkit and
rich: 23 MiB of resident memory and 0.3 s of start-up in every Hookgate process (measured),
for a tool Hookgate never runs. An empty module stands in for the CLI while the package is
imported; the evaluator itself is untouched. If ``cel`` was imported before, nothing changes.
"""

from __future__ import annotations

import sys
import types

if "cel" not in sys.modules:
    sys.modules.setdefault("cel.cli", types.ModuleType(
        "cel.cli", "Not loaded by Hookgate: run `python -m cel` for the CEL command line."))

import cel

__all__ = ["cel"]
