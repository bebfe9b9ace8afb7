"""One real server per broker for the session, and a harness per test that knows how to
publish to it and what WebhookSource consumes it.

A broker that cannot run here is skipped on a workstation and fails the run in CI
(tests/support/ci.py), where a skipped broker would pass for a tested one.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker_harness import HARNESSES, Harness
from tests.support.brokers import (
    ElasticMQ,
    KafkaServer,
    NatsServer,
    PubSubEmulator,
    RabbitServer,
    Unavailable,
)
from tests.support.ci import unavailable
from tests.support.process import ServerProcess

BROKERS = ["redis", "nats", "amqp", "kafka", "sqs", "pubsub"]
SERVERS: dict[str, Callable[[Path], ServerProcess]] = {
    "nats": NatsServer, "amqp": RabbitServer, "kafka": KafkaServer, "sqs": ElasticMQ,
    "pubsub": PubSubEmulator,
}


@pytest.fixture(scope="session")
def broker_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Servers started on first use, stopped at the end of the session."""
    started: dict[str, Any] = {}
    yield started
    for server in started.values():
        close = getattr(server, "close", None)
        if close is not None:
            close()
        else:
            server.stop()


def _server(kind: str, servers: dict[str, Any], request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Any:
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        server.start()
        return server
    if kind not in servers:
        try:
            server = SERVERS[kind](tmp_path_factory.mktemp(kind))
        except Unavailable as exc:
            unavailable(str(exc))
        servers[kind] = server  # closed at the end of the session, even if it fails here
        server.prepare()
        server.start()
    server = servers[kind]
    if not server.running:  # a test left it stopped
        server.start()
    return server


@pytest.fixture(params=BROKERS)
async def broker(request: pytest.FixtureRequest, broker_servers: dict[str, Any],
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    kind = request.param
    if kind not in HARNESSES:
        unavailable(f"no {kind} source yet")
    try:
        harness = HARNESSES[kind](_server(kind, broker_servers, request, tmp_path_factory),
                                  f"t{secrets.token_hex(4)}")
    except ImportError as exc:
        unavailable(f"the {kind} client library is missing ({exc}); "
                     "pip install -e '.[dev]'")
    await harness.setup()
    yield harness
    await harness.teardown()


@pytest.fixture
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Broker tests run the gateway on the embedded queue: what they test is the broker's
    side; both queues share the enqueue contract
    (tests/integration/deliverer/queues/test_contract.py). A test that needs a queue it can
    stop asks for Redis (``parametrize("queue_url", ["redis"], indirect=True)``)."""
    if getattr(request, "param", "sqlite") == "redis":
        return str(request.getfixturevalue("redis_url"))
    return f"sqlite:{tmp_path / 'queue.db'}"
