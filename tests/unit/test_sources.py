"""Broker sources, the pure parts: message -> event mapping, compiling spec.broker, SigV4,
and the worker's at-least-once order (enqueue, then ack) against fakes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from hookgate.deliverer.config.live import LiveConfig
from hookgate.deliverer.intake.admission import Admission
from hookgate.deliverer.intake.sources.base import (
    Consumer,
    Message,
    SourceUnavailable,
    make_consumer,
)
from hookgate.deliverer.intake.sources.mapping import BadMessage, SourceMapping, message_to_event
from hookgate.deliverer.intake.sources.sqs import Credentials, parse_sts, region_of, sign_v4
from hookgate.deliverer.intake.sources.worker import SourceMetrics, SourceWorker
from hookgate.deliverer.metrics import Metrics
from hookgate.deliverer.queues.base import Event
from hookgate.model.bundle import GatewayConfig
from hookgate.model.compiler import Compiled
from hookgate.model.routing import (
    BrokerConfig,
    EndpointConfig,
    RoutingConfig,
    SourceConfig,
    SubscriptionConfig,
)
from tests.manifest_text import compile_text, secret, source

NOW = 1_700_000_000.25
MAPPING = SourceMapping(source="shop/orders", event_type_header="event-type",
                        keep_headers=("trace-id", "absent"))


# -- message_to_event ------------------------------------------------------------------------

def test_body_embeds_the_producers_bytes_verbatim() -> None:
    raw = b'{ "id": 42,\n  "name": "\xc3\xbc" }'
    mapped = message_to_event(MAPPING, raw, {"Event-Type": "order.paid", "trace-id": "t1"},
                              "orders/0/7", NOW)
    ev = mapped.event
    assert ev.body == (b'{"type":"order.paid","timestamp":"2023-11-14T22:13:20.250Z",'
                       b'"data":' + raw + b"}")
    assert json.loads(ev.body)["data"] == {"id": 42, "name": "ü"}
    assert (ev.type, ev.source, ev.accepted_at) == ("order.paid", "shop/orders", NOW)
    assert ev.idempotency_key == "src:shop/orders:orders/0/7"
    assert ev.id.startswith("evt_")
    assert mapped.data == {"id": 42, "name": "ü"}
    assert mapped.headers == ev.headers == (("trace-id", "t1"),)


def test_type_from_a_payload_field_with_a_prefix_and_key_from_a_field() -> None:
    mapping = SourceMapping(source="s/x", event_type_field="meta.kind", event_type_prefix="shop.",
                            idempotency_field="meta.id")
    mapped = message_to_event(mapping, b'{"meta": {"kind": "paid", "id": 9}}', {}, "m-1", NOW)
    assert mapped.event.type == "shop.paid"
    assert mapped.event.idempotency_key == "src:s/x:9"
    by_header = SourceMapping(source="s/x", idempotency_header="Msg-Id")
    mapped = message_to_event(by_header, b'{"type": "a"}', {"msg-id": "abc"}, "m-1", NOW)
    assert mapped.event.idempotency_key == "src:s/x:abc"
    assert message_to_event(SourceMapping(source="s/x"), b'{"type": "a"}', {}, None,
                            NOW).event.idempotency_key is None


@pytest.mark.parametrize(("raw", "headers", "reason"), [
    (b"not json", {"event-type": "a"}, "NotJSON"),
    (b'{"a": 1', {"event-type": "a"}, "NotJSON"),
    (b'\xff{"a": 1}', {"event-type": "a"}, "NotJSON"),
    ('{"a": "x"}'.encode("utf-16"), {"event-type": "a"}, "NotJSON"),  # JSON, not UTF-8
    (b'{"a": 1}', {}, "NoEventType"),
    (b'{"a": 1}', {"event-type": ""}, "NoEventType"),
    (b'{"a": 1}', {"event-type": "bad type!"}, "InvalidEventType"),
    (b'{"pad": "' + b"x" * 200 + b'"}', {"event-type": "a"}, "TooLarge"),
])
def test_bad_messages_say_why(raw: bytes, headers: dict[str, str], reason: str) -> None:
    mapping = SourceMapping(source="s/x", event_type_header="event-type", max_bytes=100)
    with pytest.raises(BadMessage) as info:
        message_to_event(mapping, raw, headers, "1", NOW)
    assert info.value.reason == reason
    assert str(info.value)


# -- compiling spec.broker ---------------------------------------------------------------------




def test_broker_sources_compile_with_their_secrets_apart(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, source("k", (
        "  broker: {kafka: {bootstrapServers: ['k:9092'], topics: [orders],\n"
        "           sasl: {mechanism: PLAIN, secretRef: {name: ksasl}}, tls: {}}}\n"
        "  eventType: {header: event-type, prefix: 'kafka.'}\n"
        "  idempotencyKey: {field: id}\n  keepHeaders: [trace-id]\n"))
        + source("q", "  broker: {amqp: {urlFrom: {secretKeyRef: {name: rabbit}}, queue: q}}\n")
        + source("r", "  broker: {redis: {url: 'redis://r:6379/0', stream: s}}\n")
        + source("s", "  broker: {sqs: {queueUrl: 'https://sqs.eu-west-1.amazonaws.com/1/q',\n"
                      "                 credentialsFrom: {secretRef: {name: aws}}}}\n")
        + secret("ksasl", "{username: u, password: p4ss}")
        + secret("rabbit", "{url: 'amqp://u:s3cret@rabbit/'}")
        + secret("aws", "{AWS_ACCESS_KEY_ID: AK, AWS_SECRET_ACCESS_KEY: s3cr3t}"))
    assert compiled.problems == ()
    sources = compiled.config.sources
    k = sources["shop/k"]
    assert k.broker == BrokerConfig("kafka", {
        "bootstrapServers": ["k:9092"], "topics": ["orders"], "group": "hookgate",
        "sasl": {"mechanism": "PLAIN"}, "tls": {}})
    assert (k.path, k.event_type_header, k.event_type_field, k.event_type_prefix,
            k.idempotency_field, k.keep_headers) == ("", "event-type", None, "kafka.", "id",
                                                     ("trace-id",))
    assert sources["shop/q"].event_type_field == "type"  # the default: the payload's type
    assert compiled.source_secrets["shop/k"] == {"username": "u", "password": "p4ss"}
    assert compiled.source_secrets["shop/q"] == {"url": "amqp://u:s3cret@rabbit/"}
    assert compiled.source_secrets["shop/r"] == {}
    assert compiled.source_secrets["shop/s"] == {"AWS_ACCESS_KEY_ID": "AK",
                                                 "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    text = compiled.config.to_json()
    assert "s3cret" not in text and "p4ss" not in text and "s3cr3t" not in text
    assert RoutingConfig.from_json(text) == compiled.config


def test_a_broker_source_without_its_secret_is_a_problem(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, source(
        "q", "  broker: {amqp: {urlFrom: {secretKeyRef: {name: nope}}, queue: q}}\n"))
    (problem,) = compiled.problems
    assert (problem.reason, problem.field) == ("SecretMissing", "spec.broker.amqp.urlFrom")
    assert "shop/q" not in compiled.config.sources


# -- SQS signing ---------------------------------------------------------------------------

def test_sigv4_matches_the_aws_test_suite() -> None:
    # get-vanilla from the AWS Signature Version 4 test suite
    headers = sign_v4("GET", "https://example.amazonaws.com/", {}, b"",
                      Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                      "us-east-1", "service", dt.datetime(2015, 8, 30, 12, 36, 0))
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
    assert headers["x-amz-date"] == "20150830T123600Z"


def test_sqs_region_and_sts_credentials() -> None:
    assert region_of("https://sqs.eu-west-1.amazonaws.com/123/q") == "eu-west-1"
    assert region_of("http://localhost:9324/000000000000/q") is None
    creds = parse_sts(
        '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        "<AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>AK</AccessKeyId>"
        "<SecretAccessKey>SK</SecretAccessKey><SessionToken>TOK</SessionToken>"
        "<Expiration>2030-01-01T00:00:00Z</Expiration></Credentials>"
        "</AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>")
    assert (creds.access_key, creds.secret_key, creds.token) == ("AK", "SK", "TOK")


# -- the worker, against fakes ----------------------------------------------------------------

class FakeQueue:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.events: list[Event] = []
        self.buried: list[tuple[str, str, bytes]] = []

    async def enqueue(self, event: Event, endpoints: Sequence[str], **_: Any
                      ) -> tuple[str, bool]:
        self.log.append(f"enqueue {json.loads(event.body)['data']['n']}")
        self.events.append(event)
        return event.id, True

    async def bury_message(self, source: str, reason: str, raw: bytes,
                           headers: Mapping[str, str], error: str | None = None) -> str:
        self.log.append(f"bury {reason}")
        self.buried.append((source, reason, raw))
        return "msg_1/" + source


class FakeConsumer(Consumer):
    def __init__(self, log: list[str], batches: list[list[Message]], fail_connect: int = 0
                 ) -> None:
        self.log = log
        self.batches = batches
        self.fail_connect = fail_connect

    async def connect(self) -> None:
        if self.fail_connect:
            self.fail_connect -= 1
            raise SourceUnavailable("broker down")
        self.log.append("connect")

    async def receive(self, wait: float) -> Sequence[Message]:
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(wait)
        return []

    async def ack(self, messages: Sequence[Message]) -> None:
        self.log.append(f"ack {len(messages)}")

    async def close(self) -> None:
        self.log.append("close")


def msg(n: int) -> Message:
    return Message(raw=b'{"n": %d}' % n, headers={"event-type": "order.paid"},
                   message_id=str(n))


async def test_worker_acks_a_batch_only_after_enqueueing_it_and_buries_bad_ones() -> None:
    log: list[str] = []
    config = SourceConfig(key="shop/src", path="", scheme="broker",
                          event_type_header="event-type", event_type_field=None,
                          broker=BrokerConfig("redis", {}))
    routing = RoutingConfig(
        "shop/default", {"shop/a": EndpointConfig("shop/a", "http://x/", 5, (0,))},
        (SubscriptionConfig("shop/all", "shop/a", ("*",)),), sources={"shop/src": config})
    live = LiveConfig(GatewayConfig(Compiled(config=routing, signing_keys={})))
    metrics = Metrics("shop/default")
    queue = FakeQueue(log)
    bad = Message(raw=b"nope", headers={}, message_id="x")
    consumers = [FakeConsumer(log, [], fail_connect=1),
                 FakeConsumer(log, [[msg(1), bad, msg(2)], [msg(3)]])]
    admission = Admission(queue, live, metrics)  # type: ignore[arg-type]
    worker = SourceWorker(config, {}, admission=admission, metrics=SourceMetrics(metrics),
                          factory=lambda c, s: consumers.pop(0))
    worker.backoff = (0.01, 0.05)
    worker.receive_wait = 0.01
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(500):
            if "ack 1" in log:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # the first consumer could not connect: closed, and the next one tried after a backoff
    assert log[:7] == ["close", "connect", "enqueue 1", "bury NotJSON", "enqueue 2", "ack 3",
                       "enqueue 3"]
    assert log[7] == "ack 1"
    assert queue.buried == [("shop/src", "NotJSON", b"nope")]
    assert worker.state.ready and worker.state.enqueued == 3 and worker.state.dead_letters == 1
    assert log[-1] == "close"


def test_a_missing_client_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def no_aiokafka(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("aiokafka"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_aiokafka)
    import sys

    monkeypatch.delitem(sys.modules, "hookgate.deliverer.intake.sources.kafka", raising=False)
    config = SourceConfig(key="s/k", path="", scheme="broker",
                          broker=BrokerConfig("kafka", {"bootstrapServers": ["k:1"],
                                                        "topics": ["t"]}))
    with pytest.raises(SourceUnavailable) as info:
        make_consumer(config, {})
    assert "pip install 'hookgate[kafka]'" in str(info.value)
    assert type(info.value).reason == "LibraryMissing"
