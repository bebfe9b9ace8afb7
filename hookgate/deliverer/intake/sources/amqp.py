"""AMQP 0-9-1 (RabbitMQ) source: a consumer on an existing queue (``aio-pika``).

Every deliverer process consumes the queue with manual acknowledgements and ``prefetch``
unacknowledged messages at most (competing consumers). A message is acknowledged after its
event is enqueued; the messages of a process that dies (its connection drops) go back to the
queue at once. Headers are the message's header table plus its properties ``type``,
``message-id``, ``correlation-id``, ``app-id`` and ``content-type``. The message id is the
``message-id`` property: publish with one to make redeliveries duplicates rather than
second events. The lag is the queue's ready message count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aio_pika
import aio_pika.exceptions

from hookgate.deliverer.intake.sources.base import Consumer, Message, SourceUnavailable

__all__ = ["CONSUMER", "AmqpConsumer"]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class AmqpConsumer(Consumer):
    batch = 100

    async def connect(self) -> None:
        url = self.secrets.get("url")
        if not url:
            raise SourceUnavailable("no AMQP URL: broker.amqp.urlFrom names no usable Secret")
        self.queue_name = str(self.settings["queue"])
        self.conn: Any = None
        self.buffer: asyncio.Queue[Any] = asyncio.Queue()
        host = url.rpartition("@")[2]
        try:
            self.conn = await aio_pika.connect(url, timeout=10)
        except Exception as exc:
            if "ACCESS_REFUSED" in str(exc):
                raise SourceUnavailable(
                    f"RabbitMQ at {host} refused the user and password of the URL in the "
                    "Secret that broker.amqp.urlFrom names (ACCESS_REFUSED); fix them there: "
                    "the source reconnects with the new Secret") from exc
            raise SourceUnavailable(f"RabbitMQ at {host} is not reachable: {exc}") from exc
        self.channel = await self.conn.channel()
        await self.channel.set_qos(prefetch_count=int(self.settings.get("prefetch") or 100))
        try:
            self.queue = await self.channel.declare_queue(self.queue_name, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            raise SourceUnavailable(f"queue {self.queue_name!r} does not exist on {host}; "
                                    "declare it, or fix broker.amqp.queue") from None
        await self.queue.consume(self.buffer.put, no_ack=False)

    def _check(self) -> None:
        if self.conn is None or self.conn.is_closed or self.channel.is_closed:
            raise SourceUnavailable(f"the connection to RabbitMQ was lost (queue "
                                    f"{self.queue_name!r})")

    async def receive(self, wait: float) -> Sequence[Message]:
        self._check()
        try:
            first = await asyncio.wait_for(self.buffer.get(), wait)
        except TimeoutError:
            self._check()
            return []
        got = [first]
        while len(got) < self.batch and not self.buffer.empty():
            got.append(self.buffer.get_nowait())
        return [self._message(m) for m in got]

    def _message(self, m: Any) -> Message:
        headers = {str(k): _text(v) for k, v in (m.headers or {}).items()}
        for name, value in (("type", m.type), ("message-id", m.message_id),
                            ("correlation-id", m.correlation_id), ("app-id", m.app_id),
                            ("content-type", m.content_type)):
            if value:
                headers.setdefault(name, str(value))
        return Message(raw=m.body, headers=headers, message_id=m.message_id or None, handle=m)

    async def ack(self, messages: Sequence[Message]) -> None:
        self._check()
        for m in messages:
            await m.handle.ack()

    async def lag(self) -> int | None:
        queue = await self.channel.declare_queue(self.queue_name, passive=True)
        count = queue.declaration_result.message_count
        return int(count) if count is not None else None

    async def close(self) -> None:
        if self.conn is not None and not self.conn.is_closed:
            await self.conn.close()


CONSUMER = AmqpConsumer
