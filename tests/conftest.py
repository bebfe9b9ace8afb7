"""Fixtures shared by every test directory: a real Redis server for the whole session, and a
recording webhook receiver."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.ci import unavailable
from tests.support.receiver import Recorder
from tests.support.redis_server import INSTALL_HINT, RedisServer, find_redis_server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server (AOF, fsync always) for the session; tests may stop and start it.

    Without redis-server the tests that need it are skipped on a workstation, and fail in
    CI (tests/support/ci.py), where a skipped queue backend would pass for a tested one.
    """
    binary = find_redis_server()
    if binary is None:
        unavailable(INSTALL_HINT)
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def _flushall(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"FLUSHALL SYNC\r\n")
        reply = s.recv(64)
    if not reply.startswith(b"+OK"):
        raise RuntimeError(f"FLUSHALL failed: {reply!r}")


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty Redis (flushed for this test; restarted if a test left it down)."""
    redis_server.start()
    _flushall(redis_server.port)
    return redis_server.url


@pytest.fixture
async def receiver() -> AsyncIterator[Recorder]:
    """A real HTTP receiver on loopback that records every request (tests/support/receiver.py)."""
    rec = Recorder()
    await rec.start()
    yield rec
    await rec.stop()
