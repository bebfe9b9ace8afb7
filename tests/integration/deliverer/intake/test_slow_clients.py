"""Slow clients cannot hold the gateway's connections: stalled headers, a stalled body and a
chunked body that never ends are all cut off after the configured bounds, for ingest and
for inbound paths alike, and the gateway keeps serving everyone else."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.integration.deliverer.intake.test_hostile_input import GITHUB_SOURCE
from tests.support.gateway import Running, StartGateway
from tests.support.manifests import endpoint_yaml, subscription_yaml
from tests.support.receiver import Recorder


async def start(start_gateway: StartGateway, receiver: Recorder) -> Running:
    return await start_gateway(GITHUB_SOURCE + endpoint_yaml("a", receiver.url("/a"))
                               + subscription_yaml("all", "a", '["*"]'),
                               idle_timeout=1.0, body_timeout=1.0)


async def answer_of(gw: Running, request: bytes) -> tuple[bytes, float]:
    """Send ``request`` and stop sending; what the gateway answers before it closes the
    connection, and after how long."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.port)
    started = time.monotonic()
    try:
        writer.write(request)
        await writer.drain()
        # bounded: a gateway that never closes fails here instead of hanging the test
        answer = await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
    return answer, time.monotonic() - started


@pytest.mark.parametrize("path", ["/v1/events", "/in/default/gh"])
async def test_a_body_that_stalls_gets_a_408_and_the_connection_closes(
        start_gateway: StartGateway, receiver: Recorder, path: str) -> None:
    gw = await start(start_gateway, receiver)
    stalled = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               "Content-Length: 1000\r\n\r\n").encode() + b'{"type": "x",'
    never_ends = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n").encode()
    for request in (stalled, never_ends):
        answer, _ = await answer_of(gw, request)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"request_timeout"' in answer and b"within 1s" in answer
    assert receiver.received == []
    # everyone else is still served
    assert (await gw.post("/v1/events", {"type": "x", "data": {}}))[0] == 202


async def test_headers_that_never_complete_and_idle_connections_are_closed(
        start_gateway: StartGateway, receiver: Recorder) -> None:
    gw = await start(start_gateway, receiver)
    half = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Le"
    results = await asyncio.gather(*(answer_of(gw, half) for _ in range(20)),
                                   answer_of(gw, b""))
    for answer, _ in results:
        assert answer == b""  # closed, without an answer to a request never made
    assert (await gw.post("/v1/events", {"type": "x", "data": {}}))[0] == 202
