"""Kafka source: a consumer group on the source's topics (``aiokafka``).

Every deliverer process joins the group ``group`` (default ``hookgate``), so Kafka spreads
the topics' partitions over them. Offsets are committed by hand, only past records whose
events are enqueued; a process that dies leaves its partitions' uncommitted records to the
member that takes them over. A new group starts at the earliest offset. The message id is
``<topic>/<partition>/<offset>``; record headers are the message headers. The lag is the
sum over the assigned partitions of (end offset - position).

SASL (PLAIN, SCRAM-SHA-256/512) takes username and password from its Secret; TLS uses the
Secret's ca.crt (and tls.crt/tls.key for a client certificate), or the system trust store.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from hookgate.deliverer.intake.sources.base import Consumer, Message, SourceUnavailable

__all__ = ["CONSUMER", "KafkaConsumer"]


class KafkaConsumer(Consumer):
    batch = 200
    health_interval = 3.0  # seconds between metadata checks while no records come
    ack_timeout = 10.0  # a commit retries quietly while the coordinator is away

    def _tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        ca = self.secrets.get("ca.crt")
        if ca:
            context.load_verify_locations(cadata=ca)
        cert, key = self.secrets.get("tls.crt"), self.secrets.get("tls.key")
        if cert and key:
            # ssl loads a client certificate from files only: private temporary ones
            with tempfile.TemporaryDirectory() as tmp:
                paths = []
                for name, text in (("tls.crt", cert), ("tls.key", key)):
                    path = os.path.join(tmp, name)
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
                    with os.fdopen(fd, "w") as fh:
                        fh.write(text)
                    paths.append(path)
                context.load_cert_chain(paths[0], paths[1])
        return context

    async def connect(self) -> None:
        servers = [str(s) for s in self.settings["bootstrapServers"]]
        self.topics = [str(t) for t in self.settings["topics"]]
        options: dict[str, Any] = {}
        sasl = self.settings.get("sasl")
        tls = "tls" in self.settings
        if sasl:
            options.update(sasl_mechanism=str(sasl.get("mechanism") or "SCRAM-SHA-512"),
                           sasl_plain_username=self.secrets.get("username"),
                           sasl_plain_password=self.secrets.get("password"))
        if tls:
            options["ssl_context"] = self._tls()
        options["security_protocol"] = ("SASL_SSL" if sasl and tls else "SASL_PLAINTEXT"
                                        if sasl else "SSL" if tls else "PLAINTEXT")
        self.consumer: Any = AIOKafkaConsumer(
            *self.topics, bootstrap_servers=servers,
            group_id=str(self.settings.get("group") or "hookgate"),
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=self.batch, session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000, request_timeout_ms=20_000,
            client_id=f"hookgate-{os.getpid()}", **options)
        self._checked = time.monotonic()
        try:
            await self.consumer.start()
        except KafkaError as exc:
            why = ("unreachable, or it refused the SASL credentials or TLS settings "
                   "(aiokafka logs which)" if "sasl" in self.settings or tls else "unreachable")
            raise SourceUnavailable(f"Kafka at {', '.join(servers)} is not reachable: {exc} "
                                    f"({why})") from exc

    async def receive(self, wait: float) -> Sequence[Message]:
        batches = await self.consumer.getmany(timeout_ms=int(wait * 1000),
                                              max_records=self.batch)
        out = [Message(raw=r.value if r.value is not None else b"",
                       headers={k: v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                                for k, v in (r.headers or ())},
                       message_id=f"{r.topic}/{r.partition}/{r.offset}",
                       handle=(TopicPartition(r.topic, r.partition), r.offset))
               for records in batches.values() for r in records]
        if not out and time.monotonic() - self._checked > self.health_interval:
            # aiokafka retries a lost broker forever and quietly: ask for metadata to know
            self._checked = time.monotonic()
            try:
                await self.consumer.topics()
            except KafkaError as exc:
                raise SourceUnavailable(f"Kafka is not reachable: {exc}") from exc
        return out

    async def ack(self, messages: Sequence[Message]) -> None:
        offsets: dict[Any, int] = {}
        for m in messages:
            tp, offset = m.handle
            offsets[tp] = max(offsets.get(tp, -1), offset + 1)
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:  # e.g. a rebalance took the partition: it is redelivered
            raise SourceUnavailable(f"committing offsets failed: {exc}") from exc

    async def lag(self) -> int | None:
        assigned = list(self.consumer.assignment())
        if not assigned:
            return 0
        ends = await self.consumer.end_offsets(assigned)
        total = 0
        for tp in assigned:
            total += max(0, ends[tp] - await self.consumer.position(tp))
        return total

    async def close(self) -> None:
        await self.consumer.stop()


CONSUMER = KafkaConsumer
