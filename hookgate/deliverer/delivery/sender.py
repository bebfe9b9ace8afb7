"""The HTTP side of a delivery: one signed POST to one endpoint, over pooled connections.

Every connection goes through the SSRF guard (:mod:`hookgate.deliverer.delivery.network_guard`):
host names through its resolver, IP literals checked here. Redirects are never followed
(a 3xx is a failed attempt), so a receiver cannot bounce the gateway to an internal URL.
Endpoint credentials (basic, bearer, client certificate, CA bundle) come from the
snapshot's ``auth``, never from the routing config.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import aiohttp
from yarl import URL

from hookgate import __version__
from hookgate.deliverer.delivery.network_guard import AddressPolicy, AddressRefused, GuardedResolver
from hookgate.deliverer.headers import RESERVED
from hookgate.model.compiler import EndpointAuth
from hookgate.model.routing import EndpointConfig
from hookgate.signing import SigningKey, signature_header

__all__ = ["USER_AGENT", "Response", "Sender", "delivery_headers"]

USER_AGENT = f"hookgate/{__version__}"
KEEP_BODY = 1024  # bytes of a failed response kept for the attempt log
#: Bytes of a successful response read so that its connection can go back to the pool; a
#: longer body is not read: the connection is closed instead, so a receiver cannot make a
#: deliverer hold (or wait for) an answer of any size.
DRAIN_LIMIT = 64 * 1024


class Response(NamedTuple):  # a tuple: one is made per attempt, on the hot path
    status: int | None  # None when no HTTP response arrived
    duration: float
    error: str | None = None
    retry_after: str | None = None
    refused: bool = False  # the SSRF guard refused the address: retrying cannot help


def delivery_headers(endpoint: EndpointConfig, keys: Sequence[SigningKey], msg_id: str,
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


def _ssl_context(auth: EndpointAuth) -> ssl.SSLContext:
    """A TLS context with the endpoint's CA bundle and client certificate."""
    context = ssl.create_default_context(cadata=auth.ca_bundle) if auth.ca_bundle \
        else ssl.create_default_context()
    if auth.client_cert and auth.client_key:
        # ssl loads certificates from files only: a private temporary directory, removed
        # as soon as the context holds them.
        with tempfile.TemporaryDirectory(prefix="hookgate-tls-") as tmp:
            cert, key = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
            for path, text in ((cert, auth.client_cert), (key, auth.client_key)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(text)
            context.load_cert_chain(cert, key)
    return context


def _os_reason(error: OSError) -> str:
    """What the system said, by its errno ("Connection refused", "No route to host"): the
    event loop's own text ("Connect call failed ('10.0.0.1', 80)") does not say why. TLS
    failures keep their own text ("certificate verify failed: ..."). A host name that does
    not resolve says so: its errno is getaddrinfo's (EAI_*), which ``os.strerror`` does not
    know ("Unknown error -2")."""
    if isinstance(error, ssl.SSLError):  # its errno is OpenSSL's, its text says it all
        return error.strerror or str(error)
    if isinstance(error, socket.gaierror):
        return (f"the host name does not resolve ({error.strerror or error}); check the host "
                "in the endpoint's URL and the DNS the deliverer uses")
    return os.strerror(error.errno) if error.errno else (error.strerror or str(error))


async def _drain(resp: aiohttp.ClientResponse) -> None:
    """Read what is left of a response, up to :data:`DRAIN_LIMIT` bytes, so the connection
    can be reused; past that, close it."""
    drained = 0
    while chunk := await resp.content.readany():
        drained += len(chunk)
        if drained > DRAIN_LIMIT:
            resp.close()
            return


class Sender:
    """Posts deliveries. One connection pool for all endpoints, capped at ``max_connections``.

    ``allow_cidrs`` are the SSRF guard's exceptions; :meth:`set_allowed` changes them.
    """

    # A pool's kept-alive connections were checked when they were opened: a change of the
    # exceptions starts a new pool, and the old one is closed once its requests are done.

    def __init__(self, max_connections: int = 256, allow_cidrs: Iterable[str] = ()) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._connector: aiohttp.TCPConnector | None = None
        self.policy = AddressPolicy(allow_cidrs)
        self._resolver = GuardedResolver(self.policy)
        self._allowed = tuple(allow_cidrs)
        self._ssl: dict[str, tuple[EndpointAuth, ssl.SSLContext]] = {}
        # Per endpoint URL: the parsed URL and, for an IP literal the policy refuses, why.
        # Parsing and checking once per URL instead of once per delivery (hot path).
        self._targets: dict[str, tuple[URL, str | None]] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._sending = 0  # requests under way on the current pool
        self._retired: dict[aiohttp.ClientSession, int] = {}  # old pools -> requests left

    def set_allowed(self, allow_cidrs: Iterable[str]) -> None:
        """New SSRF exceptions (a config change). Cached DNS answers and kept-alive
        connections were checked against the old ones: new deliveries go through a new
        connection pool; requests under way finish on the old one, which then closes."""
        allowed = tuple(allow_cidrs)
        if allowed == self._allowed:
            return
        self._allowed = allowed
        self.policy = self._resolver.policy = AddressPolicy(allowed)
        self._targets.clear()
        if self._session is not None:
            old, left = self._session, self._sending
            self._open_pool()
            if left:
                self._retired[old] = left
            else:
                asyncio.get_running_loop().create_task(old.close())

    def _target(self, url: str) -> tuple[URL, str | None]:
        """``url`` parsed, and why the current policy refuses its host if it is a refused
        IP literal (host names are checked by the resolver on connect)."""
        cached = self._targets.get(url)
        if cached is None:
            parsed = URL(url)
            try:
                self.policy.check_host(parsed.host)
                cached = (parsed, None)
            except AddressRefused as exc:
                cached = (parsed, exc.message)
            if len(self._targets) >= 100_000:  # endpoints come and go with the config
                self._targets.clear()
            self._targets[url] = cached
        return cached

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return timeout

    def _context(self, key: str, auth: EndpointAuth) -> ssl.SSLContext:
        cached = self._ssl.get(key)
        if cached is None or cached[0] != auth:
            cached = self._ssl[key] = (auth, _ssl_context(auth))
        return cached[1]

    async def open(self) -> None:
        self._open_pool()

    def _open_pool(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0,
                                         ttl_dns_cache=60, enable_cleanup_closed=True,
                                         resolver=self._resolver)
        self._connector = connector
        # No cookies: a webhook receiver must not be able to give the gateway a session.
        self._session = aiohttp.ClientSession(connector=connector,
                                              cookie_jar=aiohttp.DummyCookieJar(),
                                              auto_decompress=False)
        self._sending = 0

    def _done(self, session: aiohttp.ClientSession) -> None:
        """A request on ``session`` finished; close a retired pool after its last one."""
        if session is self._session:
            self._sending -= 1
            return
        left = self._retired[session] = self._retired[session] - 1
        if left <= 0:
            del self._retired[session]
            asyncio.get_running_loop().create_task(session.close())

    async def close(self) -> None:
        for old in list(self._retired):
            await old.close()
        self._retired.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, session: aiohttp.ClientSession, url: URL, body: bytes,
                    headers: Mapping[str, str], limits: aiohttp.ClientTimeout,
                    tls: ssl.SSLContext | bool, started: float) -> Response:
        async with session.post(url, data=body, headers=headers, allow_redirects=False,
                                timeout=limits, ssl=tls) as resp:
            ok = 200 <= resp.status < 300
            text = "" if ok else (await resp.content.read(KEEP_BODY)).decode(errors="replace")
            if ok:
                await _drain(resp)
            error = None if ok else f"HTTP {resp.status}" + (f": {text}" if text else "")
            return Response(resp.status, time.perf_counter() - started, error,
                            resp.headers.get("Retry-After"))

    async def send(self, endpoint: EndpointConfig, keys: Sequence[SigningKey], msg_id: str,
                   body: bytes, extra_headers: Mapping[str, str] | None = None,
                   auth: EndpointAuth | None = None) -> Response:
        session = self._session
        assert session is not None, "Sender.open() first"
        timestamp = int(time.time())
        headers = delivery_headers(endpoint, keys, msg_id, timestamp, body)
        if extra_headers:
            headers.update(extra_headers)
        tls: ssl.SSLContext | bool = True
        if auth is not None:
            if auth.authorization:
                headers["Authorization"] = auth.authorization
            if auth.ca_bundle or auth.client_cert:
                tls = self._context(endpoint.key, auth)
        started = time.perf_counter()
        try:
            url, refused = self._target(endpoint.url)
            if refused is not None:  # IP literals skip the resolver
                raise AddressRefused(refused)
            self._sending += 1
            try:
                return await self._post(session, url, body, headers,
                                        self._timeout(endpoint.timeout), tls, started)
            finally:
                self._done(session)
        except AddressRefused as exc:
            return Response(None, time.perf_counter() - started, str(exc), refused=True)
        except TimeoutError:
            return Response(None, time.perf_counter() - started,
                            f"timed out after {endpoint.timeout:g}s")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefused):
                return Response(None, time.perf_counter() - started, str(exc.os_error),
                                refused=True)
            return Response(None, time.perf_counter() - started,
                            f"cannot connect to {exc.host}:{exc.port}: "
                            f"{_os_reason(exc.os_error)}")
        except (aiohttp.ClientError, asyncio.IncompleteReadError, OSError) as exc:
            return Response(None, time.perf_counter() - started,
                            f"{type(exc).__name__}: {exc}")
