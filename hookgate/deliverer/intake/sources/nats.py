"""NATS JetStream source: a durable pull consumer on a stream (``nats-py``).

The durable consumer (``durable``, default ``hookgate``) is created when missing, with
explicit acknowledgements, delivering the whole stream (or ``subject`` of it) from the start.
Every deliverer process pulls from the same durable consumer, so they compete for messages.
A message is acknowledged after its event is enqueued; one a dead process had pulled is
redelivered by JetStream after ``ackWait`` (default 30s). The message id is
``<stream>:<stream sequence>``; the lag is the consumer's pending count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from hookgate.deliverer.intake.sources.base import Consumer, Message, SourceUnavailable
from hookgate.model.durations import parse_duration

__all__ = ["CONSUMER", "NatsConsumer"]


class NatsConsumer(Consumer):
    batch = 100

    async def connect(self) -> None:
        url = str(self.settings["url"])
        self.stream = str(self.settings["stream"])
        self.durable = str(self.settings.get("durable") or "hookgate")
        subject = self.settings.get("subject")
        ack_wait = parse_duration(str(self.settings.get("ackWait") or "30s"))
        self.nc: Any = None
        try:
            # the worker reconnects (with backoff, reporting the state); the client must not
            self.nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False,
                                         max_reconnect_attempts=0)
        except Exception as exc:
            raise SourceUnavailable(f"NATS at {url} is not reachable: {exc}") from exc
        js = self.nc.jetstream(timeout=10)
        try:
            await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            raise SourceUnavailable(f"JetStream stream {self.stream!r} does not exist on {url}; "
                                    "create it (nats stream add) or fix broker.nats.stream"
                                    ) from None
        config = ConsumerConfig(durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT,
                                deliver_policy=DeliverPolicy.ALL, ack_wait=ack_wait,
                                filter_subject=str(subject) if subject else None,
                                max_ack_pending=10_000)
        try:
            await js.add_consumer(self.stream, config=config)
        except nats.js.errors.BadRequestError:
            # it exists with other settings (changed ackWait, ...): use it as it is
            await js.consumer_info(self.stream, self.durable)
        self.sub = await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)

    async def receive(self, wait: float) -> Sequence[Message]:
        try:
            msgs = await self.sub.fetch(batch=self.batch, timeout=wait)
        except nats.errors.TimeoutError:
            return []
        out = []
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            out.append(Message(raw=msg.data, headers=dict(msg.headers or {}),
                               message_id=f"{self.stream}:{seq}", handle=msg))
        return out

    async def ack(self, messages: Sequence[Message]) -> None:
        for m in messages:
            await m.handle.ack()
        await self.nc.flush(timeout=10)

    async def lag(self) -> int | None:
        info = await self.sub.consumer_info()
        return int(info.num_pending)

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()


CONSUMER = NatsConsumer
