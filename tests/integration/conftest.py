"""Gateways running in the test process, on each queue backend, against real receivers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hookgate.deliverer.config.files import FileConfig
from hookgate.deliverer.delivery.network_guard import LOOPBACK_CIDRS
from hookgate.deliverer.gateway import Gateway, GatewaySettings
from hookgate.deliverer.queues.factory import open_queue
from tests.receiver import Recorder
from tests.waiting import eventually

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def endpoint_yaml(name: str, url: str, *, schedule: str = "[0s, 100ms, 100ms]",
                  timeout: str = "5s", extra: str = "", secret: bool = True) -> str:
    ref = f"  secretRef: {{name: {name}-signing}}\n" if secret else ""
    doc = (f"apiVersion: hookgate.io/v1alpha1\nkind: WebhookEndpoint\nmetadata: {{name: {name}}}\n"
           f"spec:\n  url: {url}\n{ref}  timeout: {timeout}\n  retry: {{schedule: {schedule}}}\n"
           f"{extra}---\n")
    if secret:
        doc += (f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-signing}}\n"
                f"stringData: {{secret: {SECRET}}}\n---\n")
    return doc


def subscription_yaml(name: str, endpoint: str, types: str) -> str:
    return (f"apiVersion: hookgate.io/v1alpha1\nkind: Subscription\nmetadata: {{name: {name}}}\n"
            f"spec:\n  endpointRef: {{name: {endpoint}}}\n  eventTypes: {types}\n---\n")


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'queue.db'}"
    return str(request.getfixturevalue("redis_url"))


@dataclass
class Running:
    gateway: Gateway
    files: FileConfig
    http: aiohttp.ClientSession
    rejected: list[Exception] = field(default_factory=list)  # config changes refused

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.port}"

    async def post(self, path: str, body: Any = None, *, raw: bytes | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.http.post(self.url + path, json=None if raw is not None else body,
                                  data=raw, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def send(self, type_: str, data: Any = None, **fields: Any) -> str:
        status, doc = await self.post("/v1/events", {"type": type_, "data": data or {}, **fields})
        assert status == 202, doc
        return str(doc["id"])

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.url + path) as resp:
            body = await resp.read()
            if resp.content_type == "application/json":
                import json

                return resp.status, json.loads(body)
            return resp.status, body.decode()


    async def attempts(self, event_id: str, count: int) -> list[dict[str, Any]]:
        """The event's attempt log once it holds ``count`` attempts: a success is written by
        the queue just after the receiver answered, so the log may lag the receiver."""

        async def logged() -> list[dict[str, Any]]:
            status, doc = await self.get(f"/v1/events/{event_id}")
            found: list[dict[str, Any]] = doc["attempts"] if status == 200 else []
            return found if len(found) >= count else []

        return await eventually(logged, what=f"{count} attempts of {event_id} in the log")


StartGateway = Callable[..., Awaitable[Running]]


@pytest.fixture
async def receiver() -> AsyncIterator[Recorder]:
    rec = Recorder()
    await rec.start()
    yield rec
    await rec.stop()


@pytest.fixture
async def start_gateway(tmp_path: Path, queue_url: str) -> AsyncIterator[StartGateway]:
    """``await start_gateway(manifests)`` runs a gateway on this test's queue backend."""
    running: list[tuple[Running, asyncio.Task[None]]] = []

    async def start(manifests: str, *, concurrency: int = 32, grace: float = 5.0,
                    visibility_timeout: float = 10.0, allow_loopback: bool = True) -> Running:
        config_dir = tmp_path / "config"
        config_dir.mkdir(exist_ok=True)
        (config_dir / "manifests.yaml").write_text(manifests)
        files = FileConfig(config_dir, tmp_path / "data", interval=0.05,
                           announce=lambda _msg: None)
        loaded = files.load()
        queue = open_queue(queue_url, gateway=loaded.compiled.config.gateway,
                           visibility_timeout=visibility_timeout)
        # like `hookgate run`, which allows loopback so local receivers work
        settings = GatewaySettings(port=0, concurrency=concurrency, grace=grace,
                                   extra_allow_cidrs=LOOPBACK_CIDRS if allow_loopback else ())
        gateway = Gateway.create(queue, loaded, settings)
        await gateway.start()

        run = Running(gateway, files, aiohttp.ClientSession())
        watcher = asyncio.create_task(files.watch(gateway.apply, run.rejected.append))
        running.append((run, watcher))
        return run

    yield start
    for run, watcher in running:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await run.gateway.stop()
        await run.http.close()
