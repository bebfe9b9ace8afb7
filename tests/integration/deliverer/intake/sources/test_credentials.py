"""Wrong or missing broker credentials, against the real brokers: the source says what was
refused and what to do, logs it once (no traceback at every retry; no NATS password),
keeps retrying with backoff while the gateway goes on serving, and consumes once it is fixed.

RabbitMQ's and Kafka's wrong passwords are in test_brokers.py. SQS: ElasticMQ accepts any
credentials and signature (checked below), so what real AWS answers to wrong keys is tested
on constructed replies (tests/unit/deliverer/intake/sources/test_sqs_errors.py); here run
the refusals ElasticMQ does give: no credentials at all and a queue that does not exist.
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

from hookgate.deliverer.intake.sources.sqs import SqsConsumer
from hookgate.model.routing import BrokerConfig, SourceConfig
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

AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
           "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
           "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")


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


# -- SQS (ElasticMQ) ------------------------------------------------------------------------------

@pytest.mark.parametrize("broker", ["sqs"], indirect=True)
async def test_elasticmq_takes_any_credentials(broker: Harness) -> None:
    """Why wrong AWS keys are not tested here: ElasticMQ lets a consumer with made-up keys
    read the queue. If this starts failing, ElasticMQ checks signatures, and the AWS
    refusals of test_sqs_errors.py can be run for real."""
    sqs: Any = broker
    config = SourceConfig(key="default/src", path="", scheme="broker", broker=BrokerConfig(
        "sqs", {"queueUrl": sqs.queue_url, "endpoint": sqs.server.url, "region": "us-east-1"}))
    consumer = SqsConsumer(config, {"AWS_ACCESS_KEY_ID": "AKIANOSUCHKEY0000000",
                                    "AWS_SECRET_ACCESS_KEY": "not-the-secret-of-that-key"})
    try:
        await consumer.connect()  # GetQueueAttributes: answered 200
        assert await consumer.lag() == 0
    finally:
        await consumer.close()


@pytest.mark.parametrize("broker", ["sqs"], indirect=True)
async def test_sqs_without_credentials_is_reported_and_fixed_live(
        broker: Harness, start_gateway: StartGateway, receiver: Recorder,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in AWS_ENV:  # the gateway runs in this process: no identity from the environment
        monkeypatch.delenv(name, raising=False)
    config = manifests(broker, receiver.url("/sink"))
    without = config.replace(", credentialsFrom: {secretRef: {name: aws}}", "")
    assert without != config
    gw = await start_gateway(without)

    state = await refused(gw)
    assert state["conditions"][0]["reason"] == "BrokerUnavailable", state
    assert state["conditions"][0]["message"] == (
        "no AWS credentials for SQS: set broker.sqs.credentialsFrom (a Secret with "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or give the deliverer an identity (an "
        "IAM role for its ServiceAccount, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in "
        "its environment): the source retries with backoff"), state
    await still_serving(gw, receiver)
    await check_logs(caplog, "no AWS credentials")

    gw.files.config_dir.joinpath("manifests.yaml").write_text(config)  # credentialsFrom set
    await broker.publish([message(n) for n in range(5)])
    await receiver.wait_for(lambda r: numbers(r) >= set(range(5)), timeout=60,
                            what="the messages, once the source has credentials")
    assert (await source_state(gw))["ready"] is True


@pytest.mark.parametrize("broker", ["sqs"], indirect=True)
async def test_sqs_queue_that_does_not_exist_is_reported_and_consumed_once_created(
        broker: Harness, start_gateway: StartGateway, receiver: Recorder,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sqs: Any = broker
    later = f"{broker.name}-later"
    url = sqs.queue_url.rsplit("/", 1)[0] + "/" + later  # ElasticMQ's URL for that name
    config = manifests(broker, receiver.url("/sink"))
    assert sqs.queue_url in config
    gw = await start_gateway(config.replace(sqs.queue_url, url))

    state = await refused(gw)
    assert state["conditions"][0]["message"] == (
        f"SQS queue {url} does not exist (HTTP 400 QueueDoesNotExist); create it, or fix "
        "broker.sqs.queueUrl (and broker.sqs.region): the source retries with backoff"), state
    await still_serving(gw, receiver)
    await check_logs(caplog, "does not exist")

    # no config change: the source's next retry finds the queue
    created = await sqs._call("CreateQueue", {"QueueName": later,
                                              "Attributes": {"VisibilityTimeout": "3"}})
    assert created["QueueUrl"] == url
    sqs.queue_url = url  # the harness publishes there now
    await broker.publish([message(n) for n in range(5)])
    await receiver.wait_for(lambda r: numbers(r) >= set(range(5)), timeout=60,
                            what="the messages, once the queue exists")
    assert (await source_state(gw))["ready"] is True
