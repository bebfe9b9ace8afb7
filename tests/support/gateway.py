"""A gateway running in the test process, and what a test does with it over HTTP.

The fixture that starts one on each queue backend, ``start_gateway``, is in
tests/integration/conftest.py.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from hookgate.deliverer.config.files import FileConfig
from hookgate.deliverer.gateway import Gateway
from tests.support.waiting import wait_for

__all__ = ["Running", "StartGateway"]


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
                return resp.status, json.loads(body)
            return resp.status, body.decode()

    async def attempts(self, event_id: str, count: int) -> list[dict[str, Any]]:
        """The event's attempt log once it holds ``count`` attempts: a success is written by
        the queue just after the receiver answered, so the log may lag the receiver."""

        async def logged() -> list[dict[str, Any]]:
            status, doc = await self.get(f"/v1/events/{event_id}")
            found: list[dict[str, Any]] = doc["attempts"] if status == 200 else []
            return found if len(found) >= count else []

        return await wait_for(logged, what=f"{count} attempts of {event_id} in the log")


    async def metric(self, name: str, **labels: str) -> float | None:
        """The value of sample ``name`` with these labels (the gateway's own label is
        added) in ``GET /metrics``, parsed by prometheus_client; None when absent."""
        _, text = await self.get("/metrics")
        wanted = {"gateway": self.gateway.metrics.gateway, **labels}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == wanted:
                    return float(sample.value)
        return None


StartGateway = Callable[..., Awaitable[Running]]
