"""Wrong or missing broker credentials, against the real brokers: the source says what was
refused and what to do, logs it once (no traceback at every retry; no NATS password),
keeps retrying with backoff while the gateway goes on serving, and consumes once it is fixed.

RabbitMQ's and Kafka's wrong passwords are in test_brokers.py.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.integration.deliverer.intake.sources.test_brokers import (
    manifests,
    message,
    numbers,
    source_state,
)
from tests.support.broker_harness import Harness, NatsHarness
from tests.support.brokers import NatsServer, Unavailable
from tests.support.ci import unavailable
from tests.support.gateway import Running, StartGateway
from tests.support.receiver import Recorder
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(120)

# -- what every refusal must look like ----------------------------------------------------------

async def refused(gw: Running) -> dict[str, Any]:
    """The source's state once it reports a failure (not just "Connecting")."""
    async def failed() -> dict[str, Any]:
        state = await source_state(gw)
        reason = state["conditions"][0]["reason"]
        return state if not state["ready"] and reason != "Connecting" else {}

    return await wait_for(failed, timeout=60, what="the source to report the refusal")


async def still_serving(gw: Running, receiver: Recorder) -> None:
    """Ingest still takes events and delivers them; liveness is fine."""
    status, body = await gw.get("/healthz")
    assert status == 200, body
    await gw.send("order.created", {"n": -1})
    await receiver.wait_for(lambda r: -1 in numbers(r), timeout=30,
                            what="an ingested event delivered while the source is refused")


async def check_logs(caplog: pytest.LogCaptureFixture, expected: str, *hidden: str) -> None:
    """After three failed attempts (the worker logs each at debug level): the refusal
    logged once as a warning, no traceback from Hookgate or the broker client, and no value
    of ``hidden`` anywhere in the log."""
    def ours() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name.startswith(("hookgate", "nats"))]

    def attempts() -> int:
        return sum(1 for r in ours() if r.levelno == logging.DEBUG
                   and r.name == "hookgate.source" and expected in r.getMessage())

    await wait_for(lambda: attempts() >= 3, timeout=30, interval=0.1,
                   what="three attempts logged", state=attempts)
    tracebacks = [r.getMessage() for r in ours() if r.exc_info]
    assert not tracebacks, tracebacks
    warnings = [r.getMessage() for r in ours()
                if r.levelno == logging.WARNING and expected in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in ours() if r.levelno >= logging.WARNING]
    for value in hidden:
        leaked = [r.getMessage() for r in caplog.records if value in r.getMessage()]
        assert not leaked, leaked


# -- NATS ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nats_with_login(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server of its own that wants a user and password."""
    try:
        server = NatsServer(tmp_path_factory.mktemp("nats-login"), user="hookgate",
                            password=f"pw-{secrets.token_hex(8)}")
    except Unavailable as exc:
        unavailable(str(exc))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _log_time(line: str) -> float | None:
    # "[1234] 2026/12/02 05:59:28.137859 [ERR] 127.0.0.1:5 - cid:6 - authentication error"
    found = re.match(r"^\[\d+\] (\S+ \S+) \[ERR\] .* authentication error", line)
    if not found:
        return None
    return dt.datetime.strptime(found.group(1), "%Y/%m/%d %H:%M:%S.%f").timestamp()


def refusals_since(server: NatsServer, offset: int) -> list[float]:
    """When the server refused a login, from its log after ``offset``."""
    with server.log.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    return [t for t in map(_log_time, lines) if t is not None]


@pytest.fixture
async def nats_login(nats_with_login: NatsServer) -> AsyncIterator[NatsHarness]:
    harness = NatsHarness(nats_with_login, f"t{secrets.token_hex(4)}")
    await harness.setup()  # logs in with the right password: the stream exists
    yield harness
    await harness.teardown()


async def test_nats_with_a_wrong_password_is_reported_retried_and_fixed_live(
        nats_login: Harness, start_gateway: StartGateway, receiver: Recorder,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server: NatsServer = nats_login.server
    assert server.password is not None
    good = server.url
    bad = good.replace(f":{server.password}@", ":wrong-pw@")
    assert bad != good
    config = manifests(nats_login, receiver.url("/sink"))
    assert good in config
    offset = server.log.stat().st_size
    gw = await start_gateway(config.replace(good, bad))

    state = await refused(gw)
    text = state["conditions"][0]["message"]
    assert state["conditions"][0]["reason"] == "BrokerUnavailable", state
    assert text == (f"NATS at {server.address} refused the user and password (or token) of "
                    "the URL in broker.nats.url (Authorization Violation); fix them there: "
                    "the source reconnects with the new URL"), state
    await still_serving(gw, receiver)

    # it keeps trying, backing off: the server saw the logins, further and further apart
    def four() -> list[float]:
        times = refusals_since(server, offset)
        return times if len(times) >= 4 else []

    times = await wait_for(four, timeout=30, interval=0.1, what="four refused logins")
    gaps = [b - a for a, b in itertools.pairwise(times[:4])]
    assert all(g >= 0.3 for g in gaps) and gaps[2] > gaps[0] + 0.5, gaps
    assert not (await source_state(gw))["ready"]
    await check_logs(caplog, "refused the user and password", "wrong-pw", server.password)

    gw.files.config_dir.joinpath("manifests.yaml").write_text(config)  # fixed
    await nats_login.publish([message(n) for n in range(5)])
    await receiver.wait_for(lambda r: numbers(r) >= set(range(5)), timeout=60,
                            what="the messages, once the password is fixed")
    assert (await source_state(gw))["ready"] is True


async def test_nats_without_credentials_says_the_url_has_none(
        nats_login: Harness, start_gateway: StartGateway, receiver: Recorder,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server: NatsServer = nats_login.server
    config = manifests(nats_login, receiver.url("/sink"))
    gw = await start_gateway(config.replace(server.url, server.address))

    state = await refused(gw)
    assert state["conditions"][0]["message"] == (
        f"NATS at {server.address} wants credentials and broker.nats.url has none "
        "(Authorization Violation); put user:password@ (or token@) before the host in that "
        "URL: the source reconnects with the new URL"), state
    await still_serving(gw, receiver)
    await check_logs(caplog, "has none")
