"""Gateways running in the test process, on each queue backend, against real receivers.

``queue_url`` runs a test once on each queue backend (SQLite, and Redis with the redis
marker); ``start_gateway`` starts gateways on it. Test folders may narrow ``queue_url``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from hookgate.deliverer.config.files import FileConfig
from hookgate.deliverer.delivery.network_guard import LOOPBACK_CIDRS
from hookgate.deliverer.gateway import Gateway, GatewaySettings
from hookgate.deliverer.queues.factory import open_queue
from tests.support.gateway import Running, StartGateway


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'queue.db'}"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for talking to gateway processes."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def start_gateway(tmp_path: Path, queue_url: str) -> AsyncIterator[StartGateway]:
    """``await start_gateway(manifests)`` runs a gateway on this test's queue backend."""
    running: list[tuple[Running, asyncio.Task[None]]] = []

    async def start(manifests: str, *, concurrency: int = 32, grace: float = 5.0,
                    visibility_timeout: float = 10.0, allow_loopback: bool = True,
                    idle_timeout: float = 60.0, body_timeout: float = 30.0) -> Running:
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
                                   idle_timeout=idle_timeout, body_timeout=body_timeout,
                                   extra_allow_cidrs=LOOPBACK_CIDRS if allow_loopback else ())
        gateway = Gateway.create(queue, loaded, settings)
        await gateway.start()

        run = Running(gateway, files, aiohttp.ClientSession())
        def reject(error: Exception) -> None:  # as `hookgate run` does, and recorded
            gateway.reject(error)
            run.rejected.append(error)

        watcher = asyncio.create_task(files.watch(gateway.apply, reject))
        running.append((run, watcher))
        return run

    yield start
    for run, watcher in running:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await run.gateway.stop()
        await run.http.close()
