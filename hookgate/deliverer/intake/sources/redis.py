"""Redis Streams source: a consumer group on a stream (``XREADGROUP``, ``XACK``).

Each entry is one message: its ``payloadField`` (default ``payload``) is the payload, every
other field a header; the entry id is the message id. Deliverer processes are competing
consumers of one group (each its own consumer name). Entries a dead consumer had read but
not acknowledged are claimed (``XAUTOCLAIM``) once idle for ``reclaimAfter`` (default 30s).
The group is created at the start of the stream, so entries published before the source
existed are consumed too. Lag is the group's ``lag`` from ``XINFO GROUPS``.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from hookgate.deliverer.intake.sources.base import Consumer, Message, SourceUnavailable
from hookgate.model.durations import parse_duration

__all__ = ["CONSUMER", "RedisStreamConsumer"]


class RedisStreamConsumer(Consumer):
    batch = 100

    async def connect(self) -> None:
        url = self.secrets.get("url") or self.settings.get("url")
        if not url:
            raise SourceUnavailable("no Redis URL: set broker.redis.url or urlFrom")
        self.stream = str(self.settings["stream"])
        self.group = str(self.settings.get("group") or "hookgate")
        self.field = str(self.settings.get("payloadField") or "payload").encode()
        self.idle_ms = int(1000 * parse_duration(str(self.settings.get("reclaimAfter") or "30s")))
        self.name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.client: Any = aioredis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self._claim_from = "0-0"
        try:
            await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise SourceUnavailable(f"cannot create consumer group {self.group!r} on "
                                        f"stream {self.stream!r}: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise SourceUnavailable(f"Redis at {_mask(url)} is not reachable: {exc}") from exc

    def _message(self, entry_id: bytes, fields: dict[bytes, bytes]) -> Message:
        headers = {k.decode(errors="replace"): v.decode(errors="replace")
                   for k, v in fields.items() if k != self.field}
        raw = fields.get(self.field)
        return Message(raw=raw if raw is not None else b"", headers=headers,
                       message_id=entry_id.decode(), handle=entry_id)

    async def receive(self, wait: float) -> Sequence[Message]:
        try:
            # entries of consumers that died before acknowledging, first
            reply = await self.client.xautoclaim(self.stream, self.group, self.name,
                                                 self.idle_ms, self._claim_from,
                                                 count=self.batch)
            self._claim_from = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
            claimed = [(i, f) for i, f in reply[1] if f]
            if claimed:
                return [self._message(i, f) for i, f in claimed]
            got = await self.client.xreadgroup(self.group, self.name, {self.stream: ">"},
                                               count=self.batch, block=int(wait * 1000))
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted: recreate the group
                await self.client.xgroup_create(self.stream, self.group, id="0",
                                                mkstream=True)
                return []
            raise
        except (RedisError, OSError) as exc:
            raise SourceUnavailable(f"reading stream {self.stream!r}: {exc}") from exc
        return [self._message(i, f) for _, entries in got or [] for i, f in entries]

    async def ack(self, messages: Sequence[Message]) -> None:
        if messages:
            try:
                await self.client.xack(self.stream, self.group, *[m.handle for m in messages])
            except (RedisError, OSError) as exc:
                raise SourceUnavailable(f"acknowledging on {self.stream!r}: {exc}") from exc

    async def lag(self) -> int | None:
        for group in await self.client.xinfo_groups(self.stream):
            name = group.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == self.group:
                lag = group.get("lag")
                return int(lag) if lag is not None else None
        return None

    async def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            await client.aclose()


def _mask(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


CONSUMER = RedisStreamConsumer
