"""Google Cloud Pub/Sub source: synchronous pull on a subscription (``gcloud-aio-pubsub``).

Every deliverer process pulls from the same subscription (competing consumers). A message
is acknowledged after its event is enqueued; one a dead process had pulled is redelivered
when its ack deadline (the subscription's, at least 10s) expires. Headers are the message
attributes (plus ``orderingKey`` when set); the message id is Pub/Sub's ``messageId``.
Pub/Sub tells the backlog only through Cloud Monitoring, so no lag is reported.

Credentials: the service account key of ``credentialsFrom``, else the pod's identity
(Workload Identity, through the metadata server). ``endpoint`` (host:port) talks to another
API host, e.g. the emulator, without credentials.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import aiohttp
from gcloud.aio.pubsub import SubscriberClient

from hookgate.deliverer.intake.sources.base import Consumer, Message, SourceUnavailable

__all__ = ["CONSUMER", "PubSubConsumer"]


class PubSubConsumer(Consumer):
    batch = 100
    hold = 20  # seconds one pull may wait for messages

    async def connect(self) -> None:
        project = str(self.settings["project"])
        self.path = f"projects/{project}/subscriptions/{self.settings['subscription']}"
        endpoint = self.settings.get("endpoint")
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        options: dict[str, Any] = {"session": self.session}
        if endpoint:
            root = str(endpoint) if "://" in str(endpoint) else f"http://{endpoint}"
            options.update(api_root=root.rstrip("/") + "/v1", api_is_dev=True)
        elif self.secrets.get("credentials"):
            options["service_file"] = io.StringIO(self.secrets["credentials"])
        self.client: Any = SubscriberClient(**options)
        try:
            await self.client.get_subscription(self.path, timeout=10)
        except aiohttp.ClientResponseError as exc:
            raise SourceUnavailable(f"Pub/Sub subscription {self.path}: {exc.status} "
                                    f"{exc.message}") from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SourceUnavailable(f"Pub/Sub is not reachable: {type(exc).__name__}: "
                                    f"{exc}") from exc

    async def receive(self, wait: float) -> Sequence[Message]:
        try:
            # The server holds a pull until messages arrive: wait long, since messages a
            # pull gave up on stay leased to it until their ack deadline expires.
            messages = await self.client.pull(self.path, self.batch, timeout=self.hold)
        except TimeoutError:
            return []  # nothing arrived while the pull waited
        except aiohttp.ClientResponseError as exc:
            raise SourceUnavailable(f"pulling {self.path}: {exc.status} {exc.message}"
                                    ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise SourceUnavailable(f"Pub/Sub is not reachable: {type(exc).__name__}: "
                                    f"{exc}") from exc
        out = []
        for m in messages:
            headers = {str(k): str(v) for k, v in (m.attributes or {}).items()}
            key = getattr(m, "ordering_key", None)
            if key:
                headers.setdefault("orderingKey", str(key))
            data = m.data if isinstance(m.data, bytes) else str(m.data or "").encode()
            out.append(Message(raw=data, headers=headers, message_id=m.message_id,
                               handle=m.ack_id))
        return out

    async def ack(self, messages: Sequence[Message]) -> None:
        try:
            await self.client.acknowledge(self.path, [m.handle for m in messages])
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SourceUnavailable(f"acknowledging on {self.path}: {exc}") from exc

    async def close(self) -> None:
        session = getattr(self, "session", None)
        if session is not None:
            await session.close()


CONSUMER = PubSubConsumer
