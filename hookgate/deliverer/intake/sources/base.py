"""The contract of a broker consumer, and how the one for a source's broker is loaded.

Each broker has a module here (``kafka``, ``amqp``, ``nats``, ``pubsub``, ``redis``, ``sqs``)
with a :class:`Consumer` subclass exported as ``CONSUMER``; its client library is an optional
extra, imported only when a source of that broker is configured.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hookgate.extras import missing_extra
from hookgate.model.routing import SourceConfig

__all__ = ["EXTRAS", "Consumer", "Message", "MissingLibrary", "SourceUnavailable",
           "make_consumer"]

#: Broker kind -> (module with its Consumer class, the pip extra that brings its library).
EXTRAS: dict[str, tuple[str, str | None]] = {
    "redis": ("hookgate.deliverer.intake.sources.redis", None),
    "nats": ("hookgate.deliverer.intake.sources.nats", "nats"),
    "amqp": ("hookgate.deliverer.intake.sources.amqp", "amqp"),
    "kafka": ("hookgate.deliverer.intake.sources.kafka", "kafka"),
    "sqs": ("hookgate.deliverer.intake.sources.sqs", None),
    "pubsub": ("hookgate.deliverer.intake.sources.pubsub", "pubsub"),
}


@dataclass(frozen=True)
class Message:
    """One message as a broker handed it over."""

    raw: bytes  # the payload, exactly as the producer sent it
    headers: Mapping[str, str]  # headers / attributes / properties, as text
    message_id: str | None  # the broker's id: stable across redeliveries of this message
    handle: Any = None  # what the consumer needs to acknowledge it


class SourceUnavailable(Exception):
    """The broker cannot be consumed now; the message says what failed and what to do."""

    reason = "BrokerUnavailable"


class MissingLibrary(SourceUnavailable):
    reason = "LibraryMissing"


class Consumer(abc.ABC):
    """One broker's side: connect, receive batches, acknowledge them, close."""

    ack_timeout = 30.0  # seconds an acknowledgement may take before the broker counts as lost

    def __init__(self, config: SourceConfig, secrets: Mapping[str, str]) -> None:
        assert config.broker is not None
        self.config = config
        self.settings: Mapping[str, Any] = config.broker.settings
        self.secrets = secrets

    @abc.abstractmethod
    async def connect(self) -> None:
        """Connect and make sure the stream/queue/subscription can be read."""

    @abc.abstractmethod
    async def receive(self, wait: float) -> Sequence[Message]:
        """The next messages, waiting up to ``wait`` seconds for the first one."""

    @abc.abstractmethod
    async def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge handled messages: the broker forgets them (or commits past them)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def lag(self) -> int | None:
        """Messages waiting for this source, where the broker tells it cheaply."""
        return None


def make_consumer(config: SourceConfig, secrets: Mapping[str, str]) -> Consumer:
    """The consumer for the source's broker; :class:`MissingLibrary` when its client
    library is not installed."""
    assert config.broker is not None
    kind = config.broker.kind
    module_name, extra = EXTRAS[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MissingLibrary(missing_extra(f"the {kind} source", extra or kind,
                                           exc)) from None
    consumer: Consumer = module.CONSUMER(config, secrets)
    return consumer
