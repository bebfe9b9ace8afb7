"""NATS JetStream source: a durable pull consumer on a stream (``nats-py``).

The durable consumer (``durable``, default ``hookgate``) is created when missing, with
explicit acknowledgements, delivering the whole stream (or ``subject`` of it) from the start.
Every deliverer process pulls from the same durable consumer, so they compete for messages.
A message is acknowledged after its event is enqueued; one a dead process had pulled is
redelivered by JetStream after ``ackWait`` (default 30s). The message id is
``<stream>:<stream sequence>``; the lag is the consumer's pending count.

Credentials go in the URL (``nats://user:password@host:4222``, ``nats://token@host:4222``);
they are never in a message or a log line: the server is named by its host and port.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from hookgate.deliverer.intake.sources.base import Consumer, Message, SourceUnavailable
from hookgate.model.durations import parse_duration

__all__ = ["CONSUMER", "NatsConsumer", "without_credentials"]

log = logging.getLogger("hookgate.source")


def without_credentials(url: str) -> str:
    """``url`` without its ``user:password@`` or ``token@`` part, to show in messages."""
    return re.sub(r"(^|,|//)[^,/@\s]*@", r"\1", url)


def _refused(exc: Exception) -> bool:
    """Whether a failed connect is the server refusing the credentials (``-ERR
    'Authorization Violation'``; nats-py raises a plain ``nats.errors.Error`` for it)."""
    return (isinstance(exc, nats.errors.AuthorizationError)
            or "authorization violation" in str(exc).lower())


class NatsConsumer(Consumer):
    batch = 100

    async def connect(self) -> None:
        url = str(self.settings["url"])
        self.stream = str(self.settings["stream"])
        self.durable = str(self.settings.get("durable") or "hookgate")
        subject = self.settings.get("subject")
        ack_wait = parse_duration(str(self.settings.get("ackWait") or "30s"))
        self.nc: Any = None
        server = without_credentials(url)
        try:
            # the worker reconnects (with backoff, reporting the state); the client must not
            self.nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False,
                                         max_reconnect_attempts=0, error_cb=self._error)
        except Exception as exc:
            if _refused(exc) and server == url:
                raise SourceUnavailable(
                    f"NATS at {server} wants credentials and broker.nats.url has none "
                    "(Authorization Violation); put user:password@ (or token@) before the "
                    "host in that URL: the source reconnects with the new URL") from exc
            if _refused(exc):
                raise SourceUnavailable(
                    f"NATS at {server} refused the user and password (or token) of the URL "
                    "in broker.nats.url (Authorization Violation); fix them there: the "
                    "source reconnects with the new URL") from exc
            raise SourceUnavailable(f"NATS at {server} is not reachable: {exc}") from exc
        js = self.nc.jetstream(timeout=10)
        try:
            await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            raise SourceUnavailable(f"JetStream stream {self.stream!r} does not exist on "
                                    f"{server}; create it (nats stream add) or fix "
                                    "broker.nats.stream") from None
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

    async def _error(self, exc: Exception) -> None:
        """nats-py's report of an error. One while connecting is raised by ``connect`` too
        and reported by the worker (nats-py's default would log a traceback at every
        attempt); one later (a permissions violation, a slow consumer) is logged, without a
        traceback."""
        if self.nc is not None:
            log.warning("source %s: NATS: %s", self.config.key, exc)

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
