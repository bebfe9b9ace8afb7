"""Opening a queue by its URL: the one place that knows every backend."""

from __future__ import annotations

from hookgate.deliverer.queues.base import Queue

__all__ = ["open_queue"]


def open_queue(url: str, *, gateway: str, visibility_timeout: float = 60.0) -> Queue:
    """A queue for ``url``: ``sqlite:PATH`` (embedded) or ``redis://...`` / ``rediss://...``.

    Raises ``ValueError`` naming the accepted forms for anything else.
    """
    if url.startswith("sqlite:"):
        from hookgate.deliverer.queues.sqlite import SQLiteQueue

        return SQLiteQueue(url.removeprefix("sqlite:"), visibility_timeout=visibility_timeout)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from hookgate.deliverer.queues.redis import RedisQueue

        return RedisQueue(url, gateway=gateway, visibility_timeout=visibility_timeout)
    raise ValueError(f"queue {url!r} is not supported; use sqlite:PATH or redis://HOST:PORT/DB")
