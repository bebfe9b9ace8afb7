"""Per broker: publish messages to the real server, and the WebhookSource that consumes them.

The servers are in tests/support/brokers.py; the fixtures that pair them with a harness, in
tests/integration/deliverer/intake/sources/conftest.py."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from tests.support.waiting import wait_for

Published = Sequence[tuple[bytes, dict[str, str]]]


class Harness:
    kind = ""
    restart_settle = 0.0  # seconds a restarted server needs before clients succeed

    def __init__(self, server: Any, name: str) -> None:
        self.server = server
        self.name = name  # unique per test: the stream/topic/queue

    async def setup(self) -> None: ...

    async def teardown(self) -> None: ...

    def broker_yaml(self) -> str:
        """The value of spec.broker, on one line."""
        raise NotImplementedError

    def extra_yaml(self) -> str:
        """Secrets the source refers to."""
        return ""

    def source_yaml(self, name: str = "src", extra: str = "") -> str:
        return ("apiVersion: hookgate.io/v1alpha1\nkind: WebhookSource\n"
                f"metadata: {{name: {name}}}\nspec:\n  broker: {self.broker_yaml()}\n"
                "  eventType: {header: event-type}\n"
                f"  keepHeaders: [trace-id]\n{extra}---\n" + self.extra_yaml())

    async def publish(self, messages: Published, timeout: float = 60.0) -> None:
        """Publish, retrying (bounded) while a restarted server is still coming up."""
        async def published() -> bool:
            await asyncio.wait_for(self._publish(messages), 30)
            return True

        await wait_for(published, timeout=timeout, interval=0.5, ignoring=(Exception,),
                       what=f"{self.kind} to take {len(messages)} messages")

    async def _publish(self, messages: Published) -> None:
        raise NotImplementedError

    def stop_server(self) -> None:
        self.server.stop()

    def start_server(self) -> None:
        self.server.start()


class RedisHarness(Harness):
    kind = "redis"

    async def setup(self) -> None:
        self.client: Any = aioredis.from_url(self.server.url)

    async def teardown(self) -> None:
        await self.client.aclose()

    def broker_yaml(self) -> str:
        return (f"{{redis: {{url: '{self.server.url}', stream: {self.name}, "
                "reclaimAfter: 2s}}")

    async def _publish(self, messages: Published) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for raw, headers in messages:
                pipe.xadd(self.name, {"payload": raw, **headers})
            await pipe.execute()


HARNESSES: dict[str, type[Harness]] = {"redis": RedisHarness}


class NatsHarness(Harness):
    kind = "nats"

    async def setup(self) -> None:
        import nats

        self.nc: Any = await nats.connect(self.server.url, connect_timeout=5)
        js = self.nc.jetstream()
        await js.add_stream(name=self.name, subjects=[f"{self.name}.>"])

    async def teardown(self) -> None:
        await self.nc.close()

    def broker_yaml(self) -> str:
        return f"{{nats: {{url: '{self.server.url}', stream: {self.name}, ackWait: 2s}}}}"

    async def _publish(self, messages: Published) -> None:
        js = self.nc.jetstream()
        for raw, headers in messages:
            await js.publish(f"{self.name}.orders", raw, headers=headers or None)


HARNESSES["nats"] = NatsHarness


class AmqpHarness(Harness):
    kind = "amqp"

    async def setup(self) -> None:
        import aio_pika

        self.conn: Any = await aio_pika.connect_robust(self.server.url, timeout=10)
        self.channel = await self.conn.channel()
        await self.channel.declare_queue(self.name, durable=True)
        self.counter = 0

    async def teardown(self) -> None:
        await self.conn.close()

    def broker_yaml(self) -> str:
        return f"{{amqp: {{urlFrom: {{secretKeyRef: {{name: amqp}}}}, queue: {self.name}}}}}"

    def extra_yaml(self) -> str:
        return (f"apiVersion: v1\nkind: Secret\nmetadata: {{name: amqp}}\n"
                f"stringData: {{url: '{self.server.url}'}}\n---\n")

    async def _publish(self, messages: Published) -> None:
        import aio_pika

        for raw, headers in messages:
            self.counter += 1
            await self.channel.default_exchange.publish(
                aio_pika.Message(raw, headers=dict(headers), message_id=f"m-{self.counter}",
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=self.name)


HARNESSES["amqp"] = AmqpHarness


class KafkaHarness(Harness):
    kind = "kafka"

    async def setup(self) -> None:
        from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

        admin = AIOKafkaAdminClient(bootstrap_servers=self.server.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(self.name, num_partitions=3,
                                                replication_factor=1)])
        finally:
            await admin.close()
        self.producer: Any = AIOKafkaProducer(bootstrap_servers=self.server.bootstrap,
                                              acks="all")
        await self.producer.start()

    async def teardown(self) -> None:
        await asyncio.wait_for(self.producer.stop(), 30)

    def broker_yaml(self) -> str:
        return (f"{{kafka: {{bootstrapServers: ['{self.server.bootstrap}'], "
                f"topics: [{self.name}], group: g-{self.name}}}}}")

    async def _publish(self, messages: Published) -> None:
        sent = [await self.producer.send(
            self.name, raw, key=str(i).encode(),
            headers=[(k, v.encode()) for k, v in headers.items()])
            for i, (raw, headers) in enumerate(messages)]
        for future in sent:
            await future


    def stop_server(self) -> None:
        # a crash: a controlled shutdown of a broker with members connected can take 30s
        self.server.stop(kill=True)


HARNESSES["kafka"] = KafkaHarness


class SqsHarness(Harness):
    kind = "sqs"

    async def setup(self) -> None:
        import aiohttp

        self.http = aiohttp.ClientSession()
        doc = await self._call("CreateQueue", {"QueueName": self.name,
                                               "Attributes": {"VisibilityTimeout": "3"}})
        self.queue_url = doc["QueueUrl"]

    async def teardown(self) -> None:
        await self.http.close()

    async def _call(self, action: str, payload: dict[str, Any]) -> Any:
        import json

        async with self.http.post(self.server.url + "/", data=json.dumps(payload), headers={
                "content-type": "application/x-amz-json-1.0",
                "x-amz-target": f"AmazonSQS.{action}",
                "authorization": "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/sqs/"
                                 "aws4_request, SignedHeaders=host, Signature=0"}) as resp:
            text = await resp.text()
            assert resp.status == 200, text
            return json.loads(text)

    def broker_yaml(self) -> str:
        return (f"{{sqs: {{queueUrl: '{self.queue_url}', endpoint: '{self.server.url}', "
                "region: us-east-1, credentialsFrom: {secretRef: {name: aws}}}}")

    def extra_yaml(self) -> str:
        return ("apiVersion: v1\nkind: Secret\nmetadata: {name: aws}\n"
                "stringData: {AWS_ACCESS_KEY_ID: test, AWS_SECRET_ACCESS_KEY: test}\n---\n")

    async def _publish(self, messages: Published) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start:start + 10]
            doc = await self._call("SendMessageBatch", {"QueueUrl": self.queue_url, "Entries": [
                {"Id": str(i), "MessageBody": raw.decode(),
                 "MessageAttributes": {k: {"DataType": "String", "StringValue": v}
                                       for k, v in headers.items()}}
                for i, (raw, headers) in enumerate(chunk)]})
            assert not doc.get("Failed"), doc


HARNESSES["sqs"] = SqsHarness


class PubSubHarness(Harness):
    kind = "pubsub"
    project = "hookgate-tests"

    @property
    def root(self) -> str:
        return f"http://{self.server.host}/v1/projects/{self.project}"

    async def setup(self) -> None:
        import aiohttp

        self.http = aiohttp.ClientSession()
        self.loop = asyncio.get_running_loop()
        await self._create()

    async def _create(self) -> None:
        async with self.http.put(f"{self.root}/topics/{self.name}", json={}) as resp:
            assert resp.status in (200, 409), await resp.text()
        async with self.http.put(f"{self.root}/subscriptions/{self.name}", json={
                "topic": f"projects/{self.project}/topics/{self.name}",
                "ackDeadlineSeconds": 10}) as resp:
            assert resp.status in (200, 409), await resp.text()

    async def teardown(self) -> None:
        await self.http.close()

    def broker_yaml(self) -> str:
        return (f"{{pubsub: {{project: {self.project}, subscription: {self.name}, "
                f"endpoint: '{self.server.host}'}}}}")

    async def _publish(self, messages: Published) -> None:
        import base64

        body = {"messages": [{"data": base64.b64encode(raw).decode(), "attributes": headers}
                             for raw, headers in messages]}
        async with self.http.post(f"{self.root}/topics/{self.name}:publish",
                                  json=body) as resp:
            assert resp.status == 200, await resp.text()

    def start_server(self) -> None:
        # the emulator keeps nothing across a restart: make the topic and subscription again
        self.server.start()
        asyncio.run_coroutine_threadsafe(self._create(), self.loop).result(30)



HARNESSES["pubsub"] = PubSubHarness
