"""``hookgate validate``: every check ``hookgate run`` and the operator make, offline.

Schema and CEL rules (from the CRDs), then semantics per gateway: dangling endpoint and
secret references, duplicate names. Secrets generated at run time are assumed to exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hookgate.model.compiler import compile_config
from hookgate.model.manifests import load_paths
from hookgate.model.problems import Problem
from hookgate.model.resources import Endpoint, Gateway, Source, Subscription
from hookgate.signing import SECRET_PREFIX

__all__ = ["validate_paths"]

_PLACEHOLDER = SECRET_PREFIX + "dmFsaWRhdGlvbi1vbmx5LXBsYWNlaG9sZGVy"


def validate_paths(paths: Iterable[str | Path]) -> list[Problem]:
    resources, problems = load_paths(paths)
    gateways = {r.meta.key for r in resources if isinstance(r, Gateway)}
    gateways |= {f"{r.meta.namespace}/{r.gateway}" for r in resources if isinstance(r, Endpoint)}
    gateways |= {f"{r.meta.namespace}/default" for r in resources
                 if isinstance(r, Subscription)}
    gateways |= {f"{r.meta.namespace}/{(r.spec.get('gatewayRef') or {}).get('name', 'default')}"
                 for r in resources if isinstance(r, Source)}
    for gateway in sorted(gateways):
        generated = {r.meta.key: _PLACEHOLDER for r in resources
                     if isinstance(r, Endpoint) and r.secret_ref is None}
        compiled = compile_config(resources, gateway, generated)
        problems.extend(p for p in compiled.problems if p not in problems)
    return problems
