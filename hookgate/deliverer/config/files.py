"""Routing config from a directory of manifests: the configuration of ``hookgate run``.

Signing secrets for endpoints that name none are generated once, kept in the data
directory, and shown once on the terminal. The directory is polled for changes: a valid
change is applied without a restart; an invalid one is reported and the running config
stays, so no event is dropped because of a typo.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from hookgate.model.bundle import GatewayConfig, min_replica_acks, queue_partitions
from hookgate.model.compiler import (
    compile_config,
    endpoints_needing_secrets,
    select_gateway,
)
from hookgate.model.manifests import load_paths, manifest_files
from hookgate.model.problems import ManifestError, Problem
from hookgate.model.resources import Gateway, Resource, Secret
from hookgate.signing import generate_secret

__all__ = ["FileConfig"]

log = logging.getLogger("hookgate.config")


class FileConfig:
    def __init__(self, config_dir: str | Path, data_dir: str | Path,
                 gateway: str | None = None, interval: float = 1.0,
                 announce: Callable[[str], None] = print) -> None:
        self.config_dir = Path(config_dir)
        self.data_dir = Path(data_dir)
        self.wanted = gateway
        self.interval = interval
        self.announce = announce
        self._stamp: tuple[tuple[str, int, int], ...] = ()

    @property
    def secrets_file(self) -> Path:
        return self.data_dir / "generated-secrets.json"

    def load(self) -> GatewayConfig:
        """Read, check and compile the directory; raises ManifestError with every problem."""
        if not self.config_dir.is_dir():
            raise ManifestError([_problem(f"{self.config_dir} is not a directory",
                                          "give --config the folder holding your manifests")])
        self._stamp = self._scan()
        resources, problems = load_paths([self.config_dir])
        if problems:
            raise ManifestError(problems)
        gateway = select_gateway(resources, self.wanted)
        compiled = compile_config(resources, gateway, self._generated(resources, gateway))
        if compiled.problems:
            raise ManifestError(compiled.problems)
        spec = gw.spec if (gw := _gateway(resources, gateway)) else {}
        return GatewayConfig(compiled, _api_keys(resources, gateway), _max_body(resources, gateway),
                             min_replica_acks(spec), queue_partitions(spec))

    def _scan(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        for f in manifest_files([self.config_dir]):
            try:
                st = f.stat()
            except OSError:
                continue
            out.append((str(f), st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _generated(self, resources: list[Resource], gateway: str) -> dict[str, str]:
        known: dict[str, str] = {}
        if self.secrets_file.exists():
            known = json.loads(self.secrets_file.read_text())
        missing = [k for k in endpoints_needing_secrets(resources, gateway) if k not in known]
        if missing:
            for key in missing:
                known[key] = generate_secret()
                self.announce(f"Generated signing secret for endpoint {key}: {known[key]}\n"
                              f"  (shown once; kept in {self.secrets_file})")
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.secrets_file.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(known, fh, indent=2, sort_keys=True)
            tmp.replace(self.secrets_file)
        return known

    async def watch(self, apply: Callable[[GatewayConfig], None],
                    reject: Callable[[Exception], None] | None = None) -> None:
        """Poll the directory; apply each valid change, report each invalid one (logged, and
        passed to ``reject``)."""
        while True:
            await asyncio.sleep(self.interval)
            stamp = self._scan()
            if stamp == self._stamp:
                continue
            try:
                # In a thread: with thousands of manifests a load takes seconds, and on the
                # event loop it would pause ingest and delivery for all of them.
                loaded = await asyncio.to_thread(self.load)
            except ManifestError as exc:
                self._stamp = stamp
                log.error("config change in %s not applied; the previous config stays "
                          "in use:\n%s", self.config_dir, exc)
                if reject:
                    reject(exc)
                continue
            except (OSError, ValueError) as exc:
                log.error("config change in %s not applied: %s", self.config_dir, exc)
                if reject:
                    reject(exc)
                continue
            apply(loaded)


def _problem(message: str, hint: str) -> Problem:
    return Problem(message, reason="ConfigDirMissing", hint=hint)


def _gateway(resources: list[Resource], gateway: str) -> Gateway | None:
    return next((r for r in resources if isinstance(r, Gateway) and r.meta.key == gateway), None)


def _api_keys(resources: list[Resource], gateway: str) -> tuple[str, ...]:
    gw = _gateway(resources, gateway)
    name = None
    if gw is not None:
        ingest = gw.spec.get("ingest") or {}
        name = ((ingest.get("apiKeysFrom") or {}).get("secretRef") or {}).get("name")
    if not name:
        return ()
    assert gw is not None
    secret = next((r for r in resources if isinstance(r, Secret)
                   and r.meta.key == f"{gw.meta.namespace}/{name}"), None)
    if secret is None:
        raise ManifestError([gw.meta.problem(
            f"Secret {name!r} for ingest API keys does not exist",
            field="spec.ingest.apiKeysFrom.secretRef.name", reason="SecretMissing",
            hint="add the Secret to the config directory; each value is one API key")])
    return tuple(v.strip() for v in secret.data.values() if v.strip())


def _max_body(resources: list[Resource], gateway: str) -> int | None:
    gw = _gateway(resources, gateway)
    value = ((gw.spec.get("ingest") or {}).get("maxBodyBytes")) if gw else None
    return int(value) if value else None
