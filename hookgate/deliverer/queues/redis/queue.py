"""The cluster queue: Redis Streams, shared by every deliverer pod of one gateway.

Shape (key names in :mod:`hookgate.deliverer.queues.redis.keys`):

* One stream of deliveries per gateway and one consumer group; every process joins it under
  a name of its own (``host-pid-random``), so Redis knows which process holds which lease.
  A delivery's lease is its entry in the group's pending list; its token is the entry id.
* Retries and postponements wait in a sorted set scored by due time. ``fetch`` reclaims
  entries idle longer than the visibility timeout (``XAUTOCLAIM``: their consumer died or
  hung), then one Lua script moves due retries to the stream and leases new entries with
  their events (``XREADGROUP`` + ``HMGET``): one round trip per batch. When nothing is
  ready it waits in a blocking ``XREADGROUP``.
* Every state change is one Lua script (:mod:`~hookgate.deliverer.queues.redis.scripts`), so
  a crash between steps cannot lose or duplicate a delivery: e.g. a retry acknowledges,
  deletes and schedules in one atomic step. The
  completions made in one loop iteration share one script call. Changes requested through a
  lease this process no longer holds (it expired and another consumer took the delivery)
  only log the attempt; the holder decides the delivery's fate.
* Event bodies are stored once, in a hash per event, whose TTL (``retention``) is extended
  while deliveries are pending. The attempt log is a list per event with the same retention.
  Dead letters copy what replay needs, so they stay replayable after their event expired.

Blocking reads use a dedicated connection, so a fetch waiting for work never holds up
enqueues or completions, and never block longer than the next due retry, the next reclaim
scan or ``poll_interval``.

Redis should run with ``maxmemory-policy noeviction`` and AOF (``appendfsync everysec`` or
``always``): an evicted key is a lost event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.sentinel import MasterNotFoundError
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hookgate.deliverer.queues.base import (
    MESSAGE_PREFIX,
    Attempt,
    DeadLetter,
    Delivery,
    Depth,
    EndpointHealth,
    Event,
    EventRecord,
    PausedEndpoint,
    QueueUnavailable,
    delivery_id,
    new_event_id,
    settle,
)
from hookgate.deliverer.queues.redis import scripts
from hookgate.deliverer.queues.redis.address import FORMS, Kind, RedisAddress, mask_url, parse
from hookgate.deliverer.queues.redis.client import connect
from hookgate.deliverer.queues.redis.keys import CONSUMER_GROUP, Keys

__all__ = ["RedisQueue", "consumer_name", "describe_redis_error"]

log = logging.getLogger(__name__)

T = TypeVar("T")
#: A script call waiting for the next pipeline: script, keys, args, and who waits for it.
_Call = tuple[AsyncScript, list[str], list[Any], "asyncio.Future[Any]", bool]
"""A script call waiting for the next pipeline: script, keys, args, who waits for it, and
whether its write must reach ``min_replica_acks`` replicas before it counts as done."""

_WEEK = 7 * 86400.0
#: Due retries moved to the stream per fetch; bounds the time one script holds Redis.
_PROMOTE_BATCH = 500
#: Event bodies one lease reply carries at most; the rest of the batch's events are loaded
#: in a second round trip, so a batch of large events does not become one huge reply.
LEASE_BYTES = 8 * 1024 * 1024
#: Dead letters replayed per script.
_REPLAY_BATCH = 200
#: Consumers with no pending entries and silent this long are removed from the group.
_STALE_CONSUMER_MS = 24 * 3600 * 1000

# -- pure helpers ---------------------------------------------------------------------------


def consumer_name() -> str:
    """A consumer name unique to this process: ``host-pid-random``.

    The random part keeps names unique when a container restarts with the same pid.
    """
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and what caused it, outermost first."""
    found: list[BaseException] = []
    seen: BaseException | None = error
    while seen is not None and seen not in found:
        found.append(seen)
        seen = seen.__cause__ or seen.__context__
    return found


def _root_reason(error: BaseException) -> str:
    """The most telling reason in an exception chain ("Connection refused")."""
    for seen in _chain(error):
        if isinstance(seen, OSError) and seen.errno:
            return os.strerror(seen.errno)
    # the client words socket errors "Error 111 connecting to HOST:PORT. ..."
    for seen in _chain(error):
        found = re.match(r"Error (\d+) connecting", str(seen))
        if found:
            return os.strerror(int(found.group(1)))
    if isinstance(error, MasterNotFoundError) and error.__cause__ is not None:
        return str(error.__cause__)  # what the first Sentinel said
    return str(error) or type(error).__name__


def _broken_connection(error: BaseException) -> bool:
    """Whether a RuntimeError or AttributeError is the client meeting a closed socket."""
    text = str(error)
    return ("handler is closed" in text or "transport" in text.lower()
            or "'NoneType' object has no attribute 'write" in text)


def _in_chain(error: BaseException, kinds: type[BaseException] | tuple[type[BaseException], ...]
              ) -> BaseException | None:
    """The first exception of ``kinds`` in an exception chain, if there is one."""
    return next((seen for seen in _chain(error) if isinstance(seen, kinds)), None)


def _tls_failure(error: BaseException) -> str | None:
    """Why a TLS handshake failed ("CERTIFICATE_VERIFY_FAILED: ..."), if one did. The client
    sometimes keeps only the words of the TLS error (a Sentinel's): they are read then."""
    tls = _in_chain(error, ssl.SSLError)
    if isinstance(tls, ssl.SSLError):
        return f"{tls.reason or tls}: {getattr(tls, 'verify_message', '') or tls.strerror or ''}"
    for seen in _chain(error):
        found = re.search(r"\[SSL: (\w+)\][^:]*: ([^(]+)", str(seen))
        if found:
            return f"{found.group(1)}: {found.group(2).strip()}"
    return None


#: How a server words a refused login when the client wraps it in another error.
_REFUSED_LOGIN = ("invalid username-password pair", "WRONGPASS", "NOAUTH", "invalid password")


def describe_redis_error(url: str, what: str, error: BaseException, timeout: float) -> str:
    """What failed and what to do, for a Redis error met while doing ``what``."""
    where = f"Redis at {mask_url(url)}"
    sentinels = isinstance(error, MasterNotFoundError)
    if sentinels:
        where = f"the Sentinels of {mask_url(url)}"
        if error.__cause__ is None:
            return (f"{where} answer, but {error}; check the master's name in the URL "
                    "(redis+sentinel://HOST:PORT,.../MASTER)")
    if isinstance(error, RedisTimeoutError | TimeoutError):
        return (f"{where} did not answer {what} within {timeout:g}s; check that it is "
                "running, not overloaded, and that --queue points at it")
    if isinstance(error, ReadOnlyError):
        return (f"{where} is a read-only replica ({what} failed); point --queue at the "
                "primary")
    refused = _in_chain(error, (AuthenticationError, NoPermissionError))
    if refused is None and any(text in str(error) for text in _REFUSED_LOGIN):
        refused = error
    if refused is not None:
        if sentinels:
            return (f"{where} refused the login ({refused}); check sentinel_password (and "
                    "sentinel_username) in the URL")
        return (f"{where} refused {what} ({_login_reason(refused)}); check the user and "
                "password in --queue (USER:PASS@, percent-encoded) and the ACL of that user")
    tls = _tls_failure(error)
    if tls is not None:
        return (f"{where}: the TLS handshake failed ({tls}); check the server's certificate "
                "and the CA it is checked against (ssl_ca_certs in the URL, or "
                "spec.queue.redis.caFrom)")
    if isinstance(error, RedisConnectionError | OSError | RedisClusterException):
        reason = _root_reason(error)
        hint = ""
        if not url.lower().startswith(("rediss", "unix")) and (
                "reset by peer" in reason or "closed by server" in reason):
            hint = ("; if it speaks TLS only, use rediss:// (rediss+sentinel://, "
                    "rediss+cluster://)")
        return (f"{where} is unreachable ({reason}); check that it is running "
                f"and that --queue points at it{hint}")
    if isinstance(error, ResponseError) and str(error).startswith("OOM"):
        return (f"{where} is out of memory ({what} failed); raise its maxmemory "
                "(hookgate needs maxmemory-policy noeviction)")
    return f"{where} failed {what} ({error}); check the Redis server log"


def _login_reason(error: BaseException) -> str:
    """The server's words for a refused login, without a client's wrapping."""
    text = str(error)
    return text.rpartition(": ")[2] if "cannot be connected" in text else text


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _attempt_json(attempt: Attempt) -> str:
    return json.dumps([attempt.endpoint, attempt.attempt, attempt.at, attempt.duration,
                       attempt.status, attempt.error, attempt.outcome])


def _attempt_from_json(raw: bytes) -> Attempt:
    endpoint, number, at, duration, status, error, outcome = json.loads(raw)
    return Attempt(endpoint=endpoint, attempt=number, at=at, duration=duration, status=status,
                   error=error, outcome=outcome)


def _delayed_member(delivery: Delivery, attempt: int) -> str:
    item: list[Any] = [delivery.event.id, delivery.endpoint, attempt]
    if delivery.ordering_key is not None:
        item.append(delivery.ordering_key)
    return json.dumps(item, ensure_ascii=False)


def _order_field(endpoint: str, key: str) -> str:
    """The field of an ordered sequence in the order:busy hash."""
    return f"{endpoint} {key}"


def _event_fields(event: Event) -> list[str | bytes]:
    """The event hash as field/value pairs (absent optionals are left out)."""
    fields: list[str | bytes] = ["t", event.type, "b", event.body, "at", repr(event.accepted_at)]
    if event.source is not None:
        fields += ["s", event.source]
    if event.idempotency_key is not None:
        fields += ["k", event.idempotency_key]
    if event.headers:  # "kh", not "h": a dead letter's "h" holds a broker message's headers
        fields += ["kh", json.dumps(event.headers)]
    return fields


def _event_from_fields(event_id: str, values: Sequence[bytes | None]) -> Event | None:
    """An event from HMGET t b at s k [kh]; None when the hash is gone."""
    kind, body, at, source, key = values[:5]
    kept = values[5] if len(values) > 5 else None
    if kind is None or body is None or at is None:
        return None
    headers = tuple((str(k), str(v)) for k, v in json.loads(kept)) if kept else ()
    return Event(id=event_id, type=kind.decode(), body=body, accepted_at=float(at),
                 source=_text(source), idempotency_key=_text(key), headers=headers)


class RedisQueue:
    """The :class:`~hookgate.deliverer.queues.base.Queue` on Redis Streams.

    ``visibility_timeout`` is how long an entry may stay leased by a silent consumer before
    another one reclaims it; it must exceed every endpoint timeout. It is measured by the
    Redis server. ``retention`` is how long events and attempt logs are kept once nothing is
    pending. ``clock`` gives unix time for due times and idempotency windows, so every
    deliverer of a gateway must have a synchronised clock (NTP); tests inject their own.
    ``min_replica_acks``: an enqueue returns only once that many replicas confirmed the
    write (``WAIT``, within 0.8 x ``timeout``); otherwise it raises :class:`QueueUnavailable`, so
    an event acknowledged with 202 survives the loss of the master.
    """

    def __init__(self, url: str, *, gateway: str, visibility_timeout: float = 60.0,
                 retention: float = _WEEK, clock: Callable[[], float] = time.time,
                 timeout: float = 5.0, poll_interval: float = 0.5,
                 max_connections: int = 64, consumer: str | None = None,
                 lease_bytes: int = LEASE_BYTES, min_replica_acks: int = 0,
                 ca_file: str | None = None, partition: int = 0, partitions: int = 1) -> None:
        self.url = url
        self.ca_file = ca_file
        self.partitions = partitions
        self.min_replica_acks = min_replica_acks
        # WAIT must give up before the socket does, so its answer arrives
        self._replica_wait = round(timeout * 0.8, 3)
        self.keys = Keys(gateway, partition, partitions)
        self.visibility_timeout = visibility_timeout
        self.retention = retention
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.max_connections = max_connections
        self.consumer = consumer or consumer_name()
        self.lease_bytes = lease_bytes
        self._clock = clock
        self._reclaim_every = max(0.05, min(1.0, visibility_timeout / 4))
        self._next_reclaim = 0.0
        self._reclaim_cursor = "0-0"
        self._client: aioredis.Redis | None = None
        self._reader: aioredis.Redis | None = None
        self._read_lock = asyncio.Lock()
        self._scripts: dict[str, AsyncScript] = {}
        self._batch: list[_Call] = []
        self._flush_scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()
        # completions made in this loop iteration: written together by one script call
        self._completions: list[tuple[Delivery, Attempt, asyncio.Future[None]]] = []
        self._closed = True
        self._cluster = False
        self._interrupted = False
        self._direct: dict[str, aioredis.Redis] = {}  # cluster masters, by node name
        self._slots = asyncio.Semaphore(max_connections)  # cluster: calls under way

    def __repr__(self) -> str:
        return f"RedisQueue({mask_url(self.url)!r}, gateway={self.keys.gateway!r})"

    # -- plumbing -------------------------------------------------------------------------

    def _address(self) -> RedisAddress:
        try:
            return parse(self.url, self.ca_file)
        except ValueError as e:
            raise QueueUnavailable(str(e)) from None

    def _connect(self, socket_timeout: float, max_connections: int) -> aioredis.Redis:
        try:
            return connect(self._address(), max_connections=max_connections,
                           timeout=self.timeout, socket_timeout=socket_timeout)
        except ValueError as e:
            raise QueueUnavailable(f"Redis URL {mask_url(self.url)} is invalid ({e}); use "
                                   f"{FORMS}") from None

    @property
    def _redis(self) -> aioredis.Redis:
        if self._client is None or self._closed:
            raise QueueUnavailable(f"the queue on {mask_url(self.url)} is closed; open it first")
        return self._client

    async def _call(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """Run ``action``; recreate a vanished consumer group once; translate failures."""
        try:
            try:
                return await action()
            except ResponseError as e:
                if not str(e).startswith("NOGROUP"):
                    raise
                log.warning("consumer group of %s vanished (Redis lost its data?); recreating",
                            self.keys.stream)
                await self._create_group()
                return await action()
        except (RedisError, RedisClusterException, OSError) as e:
            raise QueueUnavailable(describe_redis_error(self.url, what, e, self.timeout)) from e
        except (RuntimeError, AttributeError) as e:
            # The cluster client, mid-failover, can write to a connection whose transport the
            # dead node closed ("the handler is closed", or a writer already gone): that is a
            # lost connection, not a bug of the caller; the next call reconnects.
            if not _broken_connection(e):
                raise
            raise QueueUnavailable(
                f"Redis at {mask_url(self.url)}: the connection broke while {what} "
                f"({type(e).__name__}: {e}); trying again reconnects") from e

    def _registered(self, source: str) -> AsyncScript:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._redis.register_script(source)
        return script

    async def _script(self, source: str, keys: Sequence[str], args: Iterable[Any], *,
                      replicated: bool = False) -> Any:
        """Run a Lua script, batched with the other scripts called in this loop iteration.

        Hundreds of deliveries finish concurrently; their scripts travel in one pipeline
        (one round trip, still one atomic script each) instead of one round trip each.
        ``replicated``: with ``min_replica_acks``, the pipeline ends with a ``WAIT`` (on the
        same connection, so it covers these writes) and the call fails unless enough
        replicas confirmed.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._batch.append((self._registered(source), list(keys), list(args), future,
                            replicated and self.min_replica_acks > 0))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flush)
        return await future

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        batch, self._batch = self._batch, []
        task = asyncio.create_task(self._flush(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[_Call]) -> None:
        try:
            replicated = any(call[4] for call in batch)
            if len(batch) == 1 and not replicated:
                script, keys, args, *_ = batch[0]
                results: list[Any] = [await script(keys=keys, args=args)]
            else:
                results = await self._pipeline(batch, replicated)
                again = [n for n, result in enumerate(results)
                         if isinstance(result, NoScriptError)]  # Redis restarted: load, rerun
                if again:
                    for source in {batch[n][0].script for n in again}:
                        await self._redis.script_load(source)
                    for n, result in zip(again, await self._pipeline(
                            [batch[n] for n in again], replicated), strict=True):
                        results[n] = result
        except BaseException as e:
            results = [e] * len(batch)
        for (*_, future, _), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _pipeline(self, batch: list[_Call], replicated: bool) -> list[Any]:
        """The batch's scripts in one pipeline; with ``replicated``, then ``WAIT``, whose
        shortfall fails the replicated calls.

        A Redis Cluster client pipelines no scripts: there they are sent concurrently, one
        round trip each, and a replicated batch goes through a plain connection to the
        master that serves this queue's hash tag (all its keys share it), where the
        pipeline and its ``WAIT`` run as on one server."""
        client: Any = self._redis
        if self._cluster:
            if not replicated:
                async def one(script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
                    async with self._slots:  # the cluster client raises past its limit
                        return await script(keys=keys, args=args)

                return list(await asyncio.gather(*(one(script, keys, args)
                                                   for script, keys, args, *_ in batch),
                                                 return_exceptions=True))
            client = self._master_of_tag()
        async with client.pipeline(transaction=False) as pipe:
            for script, keys, args, *_ in batch:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            if replicated:
                pipe.execute_command("WAIT", self.min_replica_acks, int(self._replica_wait * 1000))
            results: list[Any] = await pipe.execute(raise_on_error=False)
        if not replicated:
            return results
        acked = results.pop()
        if isinstance(acked, BaseException) or int(acked) < self.min_replica_acks:
            shortfall = QueueUnavailable(
                f"Redis at {mask_url(self.url)} confirmed the write on "
                f"{'no' if isinstance(acked, BaseException) else acked} of the "
                f"{self.min_replica_acks} replicas minReplicaAcks asks for within "
                f"{self._replica_wait:g}s, so it is not acknowledged (a retry is safe with an "
                "Idempotency-Key); check that the replicas are up and in sync")
            results = [shortfall if call[4] and not isinstance(result, BaseException)
                       else result for call, result in zip(batch, results, strict=True)]
        return results

    def _master_of_tag(self) -> aioredis.Redis:
        """A plain client of the cluster master that serves this queue's slot now (the
        cluster client learns of a failover from its MOVED answers and says so here)."""
        node = self._redis.get_node_from_key(self.keys.stream)  # type: ignore[attr-defined]
        direct = self._direct.get(node.name)
        if direct is None:
            address = self._address()
            kwargs: dict[str, Any] = {"ssl": True, **address.ssl_options} if address.tls else {}
            direct = self._direct[node.name] = aioredis.Redis(
                host=node.host, port=node.port, username=address.username,
                password=address.password, socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout, decode_responses=False, **kwargs)
        return direct

    async def _create_group(self) -> None:
        try:
            await self._redis.xgroup_create(self.keys.stream, CONSUMER_GROUP, id="0",
                                            mkstream=True)
        except ResponseError as e:
            if not str(e).startswith("BUSYGROUP"):
                raise

    # -- life cycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, check Redis answers, join the consumer group, prune long-gone consumers."""
        if not self._closed:
            return
        self._cluster = self._address().kind is Kind.CLUSTER
        self._client = self._connect(self.timeout, self.max_connections)
        self._scripts.clear()
        self._reader = self._connect(  # one connection, only for blocking reads
            self.timeout + max(self.poll_interval, self._reclaim_every), 1)
        self._closed = False
        try:
            await self._call("PING", self._redis.ping)
            await self._call("creating the consumer group", self._create_group)
            await self._call("listing consumers", self._prune_consumers)
            if self.keys.partition == 0:
                await self._check_partitions()
        except BaseException:
            await self.close()
            raise

    async def _check_partitions(self) -> None:
        """Record the partition count on first use; refuse to run with another one, which
        would leave deliveries in partitions no deliverer reads (or read some twice)."""
        key = self.keys.partition_count
        await self._call("recording the partition count", lambda: self._redis.set(
            key, self.partitions, nx=True))
        stored: Any = await self._call("reading the partition count",
                                       lambda: self._redis.get(key))
        if stored is not None and int(stored) != self.partitions:
            raise QueueUnavailable(
                f"the queue of gateway {self.keys.gateway} on {mask_url(self.url)} was made "
                f"with {int(stored)} partition(s), and spec.queue.partitions is now "
                f"{self.partitions}: changing it would strand deliveries. Set it back to "
                f"{int(stored)}, or drain the queue (no backlog, no dead letters you keep), "
                f"delete the key {key} and start again")

    async def idempotent(self, key: str) -> str | None:
        """The event id an idempotency key is held by, while it holds."""
        held: Any = await self._call("reading an idempotency key", lambda: self._redis.get(
            self.keys.idempotency(key)))
        if held is None:
            return None
        expires, _, event_id = held.decode().partition(" ")
        return event_id if float(expires) > self._clock() else None

    async def _prune_consumers(self) -> None:
        consumers = await self._redis.xinfo_consumers(self.keys.stream, CONSUMER_GROUP)
        for info in consumers:
            if int(info["pending"]) == 0 and int(info["idle"]) > _STALE_CONSUMER_MS:
                await self._redis.xgroup_delconsumer(self.keys.stream, CONSUMER_GROUP,
                                                     info["name"])

    async def close(self) -> None:
        """Leave the group if nothing is leased to us, and disconnect.

        Leases still held stay in the group's pending list and are reclaimed by another
        deliverer after the visibility timeout; release them first to hand them back now.
        """
        if self._closed:
            return
        async with self._read_lock:  # lets a blocked read end (within poll_interval)
            while self._flush_scheduled or self._flushes or self._completions:  # asked for
                await asyncio.gather(*self._flushes, asyncio.sleep(0), return_exceptions=True)
            try:
                pending = await self._redis.xpending_range(
                    self.keys.stream, CONSUMER_GROUP, min="-", max="+", count=1,
                    consumername=self.consumer)
                if not pending:
                    await self._redis.xgroup_delconsumer(self.keys.stream, CONSUMER_GROUP,
                                                         self.consumer)
            except (RedisError, RedisClusterException) as e:
                log.info("could not leave the consumer group: %s",
                         describe_redis_error(self.url, "XGROUP DELCONSUMER", e, self.timeout))
            finally:
                self._closed = True
                for client in (self._client, self._reader, *self._direct.values()):
                    if client is not None:
                        await client.aclose()
                self._client = self._reader = None
                self._direct = {}

    # -- the Queue interface --------------------------------------------------------------

    async def enqueue(self, event: Event, endpoints: Sequence[str], *,
                      idempotency_ttl: float = 86400.0,
                      ordering_keys: Mapping[str, str] | None = None) -> tuple[str, bool]:
        """Store the event and XADD one entry per endpoint, in one script.

        An event id already stored counts as a duplicate too: nothing is stored and
        ``(event.id, False)`` is returned.
        """
        targets = list(dict.fromkeys(endpoints))
        okeys = ordering_keys or {}
        now = self._clock()
        keys = [self.keys.stream, self.keys.event(event.id), self.keys.order_busy,
                self.keys.order_waiting]
        if event.idempotency_key is not None:
            keys.append(self.keys.idempotency(event.idempotency_key))
        fields = [*_event_fields(event), "n", json.dumps(targets)]
        args: list[Any] = [event.id, repr(now), f"{now + idempotency_ttl!r} {event.id}",
                           max(1, int(idempotency_ttl * 1000)), self._ttl(0.0), len(fields),
                           int(event.idempotency_key is not None), *fields]
        for endpoint in targets:
            okey = okeys.get(endpoint)
            keys.append(self.keys.order_wait(endpoint, okey) if okey is not None
                        else self.keys.stream)
            args += [endpoint, okey if okey is not None else ""]
        stored, original = await self._call(
            "enqueuing an event", lambda: self._script(scripts.ENQUEUE, keys, args,
                                                       replicated=True))
        return original.decode(), bool(stored)

    async def fetch(self, limit: int, wait: float) -> list[Delivery]:
        """Reclaim expired leases, promote due retries and lease new entries (oldest first);
        when there are none, wait on the stream."""
        if limit <= 0:
            return []
        deadline = time.monotonic() + max(0.0, wait)
        self._interrupted = False
        while not self._closed and not self._interrupted:
            deliveries: list[Delivery] = []
            if time.monotonic() >= self._next_reclaim:
                deliveries += await self._deliveries(await self._reclaim(limit))
            if len(deliveries) >= limit:
                return deliveries
            leased, next_due = await self._lease(limit - len(deliveries))
            deliveries += leased
            if deliveries:
                return deliveries
            block = min(deadline - time.monotonic(), self.poll_interval,
                        self._next_reclaim - time.monotonic())
            if next_due is not None:
                block = min(block, next_due - self._clock())
            if block >= 0.001:
                entries = await self._read(limit, block)
                if entries:
                    deliveries = await self._deliveries(entries)
                    if deliveries:
                        return deliveries
            if time.monotonic() >= deadline:
                break
        return []

    def interrupt(self) -> None:
        """End a waiting fetch early: it returns (empty) after its current blocking read."""
        self._interrupted = True

    async def _lease(self, limit: int) -> tuple[list[Delivery], float | None]:
        """Promote due retries and lease up to ``limit`` new entries, in one script call;
        the deliveries and the next due time of a delayed delivery, if any."""
        keys = [self.keys.stream, self.keys.delayed]
        args = [CONSUMER_GROUP, self.consumer, limit, repr(self._clock()), _PROMOTE_BATCH,
                self.keys.event(""), self.lease_bytes]
        next_due, *rows = await self._call(
            "leasing deliveries", lambda: self._script(scripts.LEASE, keys, args))
        events: dict[str, Event | None] = {}
        found: list[tuple[bytes, str, str, int, str | None]] = []
        for entry_id, event_id, endpoint, attempt, okey, fields in rows:
            eid = event_id.decode()
            if fields is not None:
                events[eid] = _event_from_fields(eid, fields)
            found.append((entry_id, eid, endpoint.decode(), int(attempt), _text(okey)))
        missing = [eid for _, eid, *_ in found if eid not in events]
        if missing:  # past the reply's byte budget
            events.update(await self._load_events(list(dict.fromkeys(missing))))
        deliveries = await self._assemble(found, events)
        return deliveries, float(next_due) if next_due is not None else None

    async def _reclaim(self, limit: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Take over entries whose consumer has been silent for the visibility timeout."""
        result = await self._call("reclaiming expired leases", lambda: self._redis.xautoclaim(
            self.keys.stream, CONSUMER_GROUP, self.consumer,
            min_idle_time=int(self.visibility_timeout * 1000), start_id=self._reclaim_cursor,
            count=limit))
        cursor, claimed = result[0], result[1]
        self._reclaim_cursor = _text(cursor) or "0-0"
        if self._reclaim_cursor == "0-0":  # scanned the whole pending list: rest a while
            self._next_reclaim = time.monotonic() + self._reclaim_every
        claimed = [(entry_id, fields) for entry_id, fields in claimed if fields]
        if claimed:
            log.info("reclaimed %d deliveries whose lease expired", len(claimed))
            await self._count_reclaims(claimed)
        return claimed

    async def _count_reclaims(self, claimed: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Each time an entry was handed out beyond the first counts as an attempt: a stream
        entry's fields cannot change, so its attempt is read with its delivery count."""
        async def counts() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for entry_id, _ in claimed:
                    pipe.xpending_range(self.keys.stream, CONSUMER_GROUP, min=entry_id,
                                        max=entry_id, count=1)
                return await pipe.execute()

        for (_, fields), pending in zip(claimed, await self._call("counting reclaims", counts),
                                        strict=True):
            handed_out = int(pending[0]["times_delivered"]) if pending else 1
            fields[b"a"] = str(int(fields[b"a"]) + handed_out - 1).encode()

    async def _read(self, count: int, block: float
                    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        streams: dict[Any, Any] = {self.keys.stream: ">"}
        response: Any
        if block < 0.001:
            response = await self._call("reading the stream", lambda: self._redis.xreadgroup(
                CONSUMER_GROUP, self.consumer, streams, count=count))
        else:
            async with self._read_lock:
                reader = self._reader
                if self._closed or reader is None:
                    return []
                response = await self._call("reading the stream", lambda: reader.xreadgroup(
                    CONSUMER_GROUP, self.consumer, streams, count=count,
                    block=max(1, int(block * 1000))))
        if not response:
            return []
        if isinstance(response, dict):  # RESP3
            return [(entry_id, fields) for entries in response.values()
                    for batch in entries for entry_id, fields in batch]
        return [(entry_id, fields) for _, entries in response for entry_id, fields in entries]

    async def _deliveries(self, entries: Sequence[tuple[bytes, dict[bytes, bytes]]]
                          ) -> list[Delivery]:
        """Attach their events to entries read or reclaimed outside :meth:`_lease`."""
        if not entries:
            return []
        event_ids = list(dict.fromkeys(fields[b"e"].decode() for _, fields in entries))
        events = await self._load_events(event_ids)
        return await self._assemble(
            [(entry_id, fields[b"e"].decode(), fields[b"p"].decode(), int(fields[b"a"]),
              _text(fields.get(b"o"))) for entry_id, fields in entries], events)

    async def _load_events(self, event_ids: Sequence[str]) -> dict[str, Event | None]:
        async def load() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for event_id in event_ids:
                    pipe.hmget(self.keys.event(event_id), ["t", "b", "at", "s", "k", "kh"])
                return await pipe.execute()

        loaded = await self._call("loading events", load)
        return {i: _event_from_fields(i, values)
                for i, values in zip(event_ids, loaded, strict=True)}

    async def _assemble(self, found: Sequence[tuple[bytes, str, str, int, str | None]],
                        events: Mapping[str, Event | None]) -> list[Delivery]:
        """Leased entries (entry id, event id, endpoint, attempt, ordering key) as
        deliveries; entries whose event expired are dropped, loudly."""
        deliveries: list[Delivery] = []
        lost: list[bytes] = []
        for entry_id, event_id, endpoint, attempt, okey in found:
            event = events.get(event_id)
            if event is None:
                log.error("event %s expired before its delivery to %s; dropping the delivery "
                          "(raise the queue retention)", event_id, endpoint)
                lost.append(entry_id)
                continue
            deliveries.append(Delivery(id=delivery_id(event_id, endpoint), event=event,
                                       endpoint=endpoint, attempt=attempt,
                                       token=entry_id.decode(), ordering_key=okey))
        if lost:
            async def drop() -> None:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.xack(self.keys.stream, CONSUMER_GROUP, *lost)
                    pipe.xdel(self.keys.stream, *lost)
                    await pipe.execute()

            await self._call("dropping orphaned deliveries", drop)
        return deliveries

    def _ttl(self, delay: float) -> int:
        """Seconds an event must live when its next delivery is ``delay`` seconds away."""
        return max(1, int(delay + self.retention + 1))

    def _lease_args(self, delivery: Delivery) -> list[Any]:
        return [CONSUMER_GROUP, self.consumer, delivery.token]

    def _order_keys(self, delivery: Delivery) -> tuple[list[str], str]:
        """The keys a finishing ordered head needs, and its field in order:busy."""
        if delivery.ordering_key is None:
            return [], ""
        return ([self.keys.order_busy, self.keys.order_waiting,
                 self.keys.order_wait(delivery.endpoint, delivery.ordering_key)],
                _order_field(delivery.endpoint, delivery.ordering_key))

    async def complete(self, delivery: Delivery, attempt: Attempt) -> None:
        """Log the attempt and drop the delivery (only the attempt if the lease was lost).

        Completions made in the same loop iteration are written by one script call (one
        command to encode and parse instead of one per delivery)."""
        await self.complete_soon(delivery, attempt)

    def complete_soon(self, delivery: Delivery, attempt: Attempt) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._completions.append((delivery, attempt, done))
        if len(self._completions) == 1:
            loop.call_soon(self._start_completions)
        return done

    def _start_completions(self) -> None:
        group, self._completions = self._completions, []
        task = asyncio.create_task(self._complete_all(group))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _complete_all(self, group: list[tuple[Delivery, Attempt, asyncio.Future[None]]]
                            ) -> None:
        keys = [self.keys.stream, self.keys.order_busy, self.keys.order_waiting]
        args: list[Any] = [CONSUMER_GROUP, self.consumer, self._ttl(0.0)]
        for delivery, attempt, _ in group:
            keys.append(self.keys.attempts(delivery.event.id))
            order_keys, order_field = self._order_keys(delivery)
            keys += order_keys[2:]  # its wait list; busy and waiting are shared
            args += [delivery.token, _attempt_json(attempt), order_field]
        error: BaseException | None = None
        try:
            await self._call("completing deliveries",
                             lambda: self._script(scripts.COMPLETE_ALL, keys, args))
        except Exception as e:
            error = e
        settle((done for _, _, done in group), error)

    async def _delay(self, what: str, delivery: Delivery, attempt: Attempt | None, due: float,
                     number: int) -> None:
        keys = [self.keys.stream, self.keys.delayed, self.keys.event(delivery.event.id),
                self.keys.attempts(delivery.event.id)]
        args = [*self._lease_args(delivery),
                _attempt_json(attempt) if attempt is not None else "", self._ttl(0.0),
                repr(due), _delayed_member(delivery, number),
                self._ttl(max(0.0, due - self._clock()))]
        await self._call(what, lambda: self._script(scripts.DELAY, keys, args))

    async def retry(self, delivery: Delivery, attempt: Attempt, due: float) -> None:
        await self._delay("scheduling a retry", delivery, attempt, due, delivery.attempt + 1)

    async def postpone(self, delivery: Delivery, due: float) -> None:
        await self._delay("postponing a delivery", delivery, None, due, delivery.attempt)

    async def bury(self, delivery: Delivery, attempt: Attempt | None, reason: str) -> None:
        event = delivery.event
        order_keys, order_field = self._order_keys(delivery)
        keys = [self.keys.stream, self.keys.attempts(event.id), self.keys.event(event.id),
                self.keys.dead(delivery.id), self.keys.dead_index,
                self.keys.dead_by_endpoint(delivery.endpoint), *order_keys]
        now = self._clock()
        made = delivery.attempt if attempt is not None else delivery.attempt - 1
        letter: list[Any] = [*_event_fields(event), "e", event.id, "p", delivery.endpoint,
                             "a", made, "r", reason, "d", repr(now)]
        if delivery.ordering_key is not None:
            letter += ["o", delivery.ordering_key]
        if attempt is not None and attempt.error is not None:
            letter += ["x", attempt.error]
        args = [*self._lease_args(delivery),
                _attempt_json(attempt) if attempt is not None else "", self._ttl(0.0),
                repr(now), delivery.id, order_field, *letter]
        await self._call("burying a delivery", lambda: self._script(scripts.BURY, keys, args))

    async def bury_message(self, source: str, reason: str, raw: bytes,
                           headers: Mapping[str, str], error: str | None = None) -> str:
        now = self._clock()
        event_id = MESSAGE_PREFIX + new_event_id(now).removeprefix("evt_")
        letter_id = delivery_id(event_id, source)
        fields: list[Any] = ["t", "", "b", raw, "at", repr(now), "s", source, "n", "[]"]
        letter = [*fields, "e", event_id, "p", source, "a", 0, "r", reason, "d", repr(now),
                  "h", json.dumps(dict(headers))]
        if error is not None:
            letter += ["x", error]

        async def write() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys.event(event_id), items=fields)
                pipe.expire(self.keys.event(event_id), self._ttl(0.0))
                pipe.hset(self.keys.dead(letter_id), items=letter)
                pipe.zadd(self.keys.dead_index, {letter_id: now})
                pipe.zadd(self.keys.dead_by_endpoint(source), {letter_id: now})
                await pipe.execute()

        await self._call("keeping a broker message as a dead letter", write)
        return letter_id

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        args: list[Any] = [CONSUMER_GROUP, self.consumer]
        for d in deliveries:
            args += [d.token, d.event.id, d.endpoint, d.attempt, d.ordering_key or ""]
        await self._call("releasing deliveries",
                         lambda: self._script(scripts.RELEASE, [self.keys.stream], args))

    async def depth(self) -> Depth:
        """ready = the group's lag (plus retries already due), leased = its pending count,
        delayed and dead = set sizes."""
        now = repr(self._clock())

        async def read() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xinfo_groups(self.keys.stream)
                pipe.xlen(self.keys.stream)
                pipe.zcount(self.keys.delayed, "-inf", now)
                pipe.zcount(self.keys.delayed, f"({now}", "+inf")
                pipe.zcard(self.keys.dead_index)
                pipe.get(self.keys.order_waiting)
                return await pipe.execute()

        groups, length, due, delayed, dead, waiting = await self._call(
            "reading the queue depth", read)
        group = next((g for g in groups if _text(g["name"]) == CONSUMER_GROUP), None)
        leased = int(group["pending"]) if group is not None else 0
        lag = group.get("lag") if group is not None else None
        # Entries are deleted once acknowledged, so the stream holds exactly the ready and
        # leased deliveries: a fallback for when Redis cannot tell the lag.
        ready = int(due) + (int(lag) if lag is not None else max(0, int(length) - leased))
        ready += int(waiting or 0)  # ordered deliveries queued behind their sequence's head
        return Depth(ready=ready, delayed=int(delayed), dead=int(dead), leased=leased)

    async def event(self, event_id: str) -> EventRecord | None:
        async def read() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hmget(self.keys.event(event_id), ["t", "b", "at", "s", "k", "kh", "n"])
                pipe.lrange(self.keys.attempts(event_id), 0, -1)
                return await pipe.execute()

        values, attempts = await self._call("reading an event", read)
        event = _event_from_fields(event_id, values)
        if event is None:
            return None
        endpoints = tuple(json.loads(values[6])) if values[6] is not None else ()
        return EventRecord(event=event, endpoints=endpoints,
                           attempts=tuple(_attempt_from_json(a) for a in attempts))

    async def dead_letters(self, endpoint: str | None = None, limit: int = 100
                           ) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        if limit <= 0:
            return []
        index = self.keys.dead_index if endpoint is None else self.keys.dead_by_endpoint(endpoint)

        async def read() -> list[Any]:
            ids: Any = await self._redis.zrange(index, 0, limit - 1)
            async with self._redis.pipeline(transaction=False) as pipe:
                for raw in ids:
                    pipe.hmget(self.keys.dead(raw.decode()),
                               ["e", "t", "p", "a", "r", "x", "d", "h"])
                rows = await pipe.execute()
            return list(zip(ids, rows, strict=True))

        letters = []
        for raw, row in await self._call("listing dead letters", read):
            event_id, kind, target, attempts, reason, error, dead_at, headers = row
            if event_id is None:  # replayed meanwhile
                continue
            letters.append(DeadLetter(
                delivery_id=raw.decode(), event_id=event_id.decode(), event_type=kind.decode(),
                endpoint=target.decode(), attempts=int(attempts), reason=reason.decode(),
                error=_text(error), dead_at=float(dead_at),
                headers=json.loads(headers) if headers is not None else None))
        return letters

    async def replay(self, ids: Sequence[str] = (), endpoint: str | None = None,
                     all: bool = False) -> int:
        """Requeue dead letters matching any of the selectors, in batches of one script each."""
        # broker messages kept as dead letters never became events: nothing to replay
        chosen = [i for i in dict.fromkeys(ids) if not i.startswith(MESSAGE_PREFIX)]
        found: Any
        if endpoint is not None:
            found = await self._call("listing dead letters", lambda: self._redis.zrange(
                self.keys.dead_by_endpoint(endpoint), 0, -1))
            chosen += [i.decode() for i in found if not i.startswith(MESSAGE_PREFIX.encode())]
        total = 0
        for start in range(0, len(chosen), _REPLAY_BATCH):
            total += await self._replay_batch(chosen[start:start + _REPLAY_BATCH])
        skipped = 0  # kept messages at the head of the index, left where they are
        while all:
            start = skipped
            found = await self._call("listing dead letters", lambda: self._redis.zrange(
                self.keys.dead_index, start, start + _REPLAY_BATCH - 1))  # noqa: B023
            if not found:
                break
            batch = [i.decode() for i in found if not i.startswith(MESSAGE_PREFIX.encode())]
            skipped += len(found) - len(batch)
            if batch:
                total += await self._replay_batch(batch)
        return total

    async def _replay_batch(self, ids: Sequence[str]) -> int:
        ids = list(dict.fromkeys(ids))

        async def where() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for i in ids:
                    pipe.hmget(self.keys.dead(i), ["e", "p", "o"])
                return await pipe.execute()

        keys = [self.keys.stream, self.keys.dead_index, self.keys.order_busy,
                self.keys.order_waiting]
        args: list[Any] = [self._ttl(0.0)]
        for i, (event_id, endpoint, okey) in zip(
                ids, await self._call("reading dead letters", where), strict=True):
            letter = self.keys.dead(i)
            if event_id is None or endpoint is None:  # gone: the script only unindexes it
                keys += [letter, letter, letter, letter]
            else:
                ep = endpoint.decode()
                keys += [letter, self.keys.dead_by_endpoint(ep), self.keys.event(event_id.decode()),
                         self.keys.order_wait(ep, okey.decode()) if okey is not None
                         else self.keys.stream]
            args.append(i)
        if not ids:
            return 0
        count = await self._call("replaying dead letters",
                                 lambda: self._script(scripts.REPLAY, keys, args))
        return int(count)

    async def run_script(self, what: str, source: str, keys: Sequence[str],
                         args: Iterable[Any]) -> Any:
        """Run a Lua script of another component (the rate limiter) on this connection."""
        return await self._call(what, lambda: self._script(source, keys, args))

    async def probe_write(self) -> None:
        await self._call("writing the readiness probe", lambda: self._redis.set(
            self.keys.write_probe, repr(self._clock()), px=60_000))

    async def pause_endpoint(self, pause: PausedEndpoint) -> bool:
        value = json.dumps({"reason": pause.reason, "message": pause.message, "at": pause.at})
        created = await self._call("pausing an endpoint", lambda: self._redis.hsetnx(
            self.keys.paused, pause.endpoint, value))
        return bool(created)

    async def resume_endpoint(self, endpoint: str) -> bool:
        removed = await self._call("resuming an endpoint", lambda: self._redis.hdel(
            self.keys.paused, endpoint))
        return bool(removed)

    async def paused_endpoints(self) -> dict[str, PausedEndpoint]:
        raw: Any = await self._call("reading paused endpoints",
                                    lambda: self._redis.hgetall(self.keys.paused))
        out = {}
        for name, value in raw.items():
            endpoint, doc = name.decode(), json.loads(value)
            out[endpoint] = PausedEndpoint(endpoint=endpoint, reason=doc["reason"],
                                           message=doc["message"], at=doc["at"])
        return out

    async def record_failure(self, endpoint: str, at: float, *, open_after: int | None = None,
                             reopen: bool = False) -> EndpointHealth:
        value = await self._call("recording a failed attempt", lambda: self._script(
            scripts.HEALTH_FAILURE, [self.keys.health, self.keys.trial(endpoint)],
            [endpoint, repr(at), open_after or 0, 1 if reopen else 0, repr(self._clock())]))
        return _health(endpoint, value)

    async def record_success(self, endpoint: str) -> None:
        await self._call("recording a successful attempt", lambda: self._script(
            scripts.HEALTH_SUCCESS, [self.keys.health, self.keys.trial(endpoint)], [endpoint]))

    async def claim_trial(self, endpoint: str, until: float) -> bool:
        ttl = max(1, int((until - self._clock()) * 1000))
        claimed = await self._call("claiming a circuit trial", lambda: self._script(
            scripts.HEALTH_CLAIM, [self.keys.health, self.keys.trial(endpoint)],
            [endpoint, ttl]))
        return bool(claimed)

    async def endpoint_health(self) -> dict[str, EndpointHealth]:
        raw: Any = await self._call("reading endpoint health",
                                    lambda: self._redis.hgetall(self.keys.health))
        return {name.decode(): _health(name.decode(), value) for name, value in raw.items()}

    async def purge(self, before: float) -> int:
        """Nothing to do: events and attempt logs expire by TTL in Redis. Always 0."""
        return 0


def _health(endpoint: str, value: bytes | str) -> EndpointHealth:
    """Parse a field of the health hash (see keys.py)."""
    text = value.decode() if isinstance(value, bytes) else value
    failures, since, opened = text.split(" ")
    return EndpointHealth(endpoint, int(failures), float(since),
                          float(opened) if opened else None)
