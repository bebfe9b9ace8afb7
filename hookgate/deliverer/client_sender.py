"""The HTTP side of a delivery: one signed POST to one endpoint, over pooled connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from hookgate import __version__
from hookgate.deliverer.signing import signature_header
from hookgate.model.routing import EndpointConfig

__all__ = ["USER_AGENT", "Response", "Sender", "delivery_headers"]

USER_AGENT = f"hookgate/{__version__}"
# Headers the gateway owns: an endpoint's configured headers cannot replace them.
RESERVED = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature", "content-type",
                      "user-agent", "content-length", "host"})
KEEP_BODY = 1024  # bytes of a failed response kept for the attempt log


@dataclass(frozen=True)
class Response:
    status: int | None  # None when no HTTP response arrived
    duration: float
    error: str | None = None
    retry_after: str | None = None


def delivery_headers(endpoint: EndpointConfig, keys: Sequence[bytes], msg_id: str,
                     timestamp: int, body: bytes) -> dict[str, str]:
    headers = {k: v for k, v in endpoint.headers.items() if k.lower() not in RESERVED}
    headers.update({
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(keys, msg_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    })
    return headers


class Sender:
    """Posts deliveries. One connection pool for all endpoints, capped at ``max_connections``."""

    def __init__(self, max_connections: int = 256) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0,
                                         ttl_dns_cache=60, enable_cleanup_closed=True)
        # No cookies: a webhook receiver must not be able to give the gateway a session.
        self._session = aiohttp.ClientSession(connector=connector,
                                              cookie_jar=aiohttp.DummyCookieJar(),
                                              auto_decompress=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, endpoint: EndpointConfig, keys: Sequence[bytes], msg_id: str,
                   body: bytes, extra_headers: Mapping[str, str] | None = None) -> Response:
        assert self._session is not None, "Sender.open() first"
        timestamp = int(time.time())
        headers = delivery_headers(endpoint, keys, msg_id, timestamp, body)
        if extra_headers:
            headers.update(extra_headers)
        started = time.perf_counter()
        try:
            async with self._session.post(
                endpoint.url, data=body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=endpoint.timeout),
            ) as resp:
                ok = 200 <= resp.status < 300
                text = "" if ok else (await resp.content.read(KEEP_BODY)).decode(errors="replace")
                if ok:
                    await resp.read()  # drain so the connection goes back to the pool
                error = None if ok else f"HTTP {resp.status}" + (f": {text}" if text else "")
                return Response(resp.status, time.perf_counter() - started, error,
                                resp.headers.get("Retry-After"))
        except TimeoutError:
            return Response(None, time.perf_counter() - started,
                            f"timed out after {endpoint.timeout:g}s")
        except aiohttp.ClientConnectorError as exc:
            return Response(None, time.perf_counter() - started,
                            f"cannot connect: {exc.os_error.strerror or exc}")
        except (aiohttp.ClientError, asyncio.IncompleteReadError, OSError) as exc:
            return Response(None, time.perf_counter() - started,
                            f"{type(exc).__name__}: {exc}")
