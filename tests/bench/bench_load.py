"""Load generator and ceiling client of the benchmarks, run in a process of its own.

``rate``: post events to a gateway's ingest API at a fixed rate (open loop: the i-th event
is sent at start + i/rate whatever happened to the previous ones) for a bounded time, and
write one record per event (id, when the POST started, when the 202 came back).

``ceiling``: the physical ceiling of delivery on this machine: the gateway's own HTTP client
stack (aiohttp, the connector settings of ``client_sender.Sender``) posting the same bodies to
the same sink at the same concurrency, with no queue, no routing and no signing.

Every loop is bounded in count and in time. Not a test: never collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import aiohttp

from hookgate.deliverer.delivery.network_guard import LOOPBACK_CIDRS, AddressPolicy, GuardedResolver
from hookgate.deliverer.delivery.sender import USER_AGENT
from hookgate.deliverer.gateway import settle_heap
from hookgate.deliverer.intake.event import IngestRequest, build_event

EVENT_TYPE = "bench.event"


def payload(n: int, size: int) -> dict[str, Any]:
    """The ``data`` of event ``n``, padded so the delivery body is about ``size`` bytes."""
    base = {"n": n, "amount": 120, "pad": ""}
    overhead = len(json.dumps({"type": EVENT_TYPE, "timestamp": "2024-01-01T00:00:00.000Z",
                               "data": base}, separators=(",", ":")))
    base["pad"] = "x" * max(0, size - overhead)
    return base


def cpu_seconds(pid: int | None = None) -> float:
    with open(f"/proc/{pid or os.getpid()}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def install_loop(uvloop: bool) -> None:
    if uvloop:
        import uvloop as uv

        asyncio.set_event_loop_policy(uv.EventLoopPolicy())


async def run_rate(url: str, rate: float, duration: float, size: int, max_pending: int
                   ) -> dict[str, Any]:
    total = max(1, int(rate * duration))
    records: list[tuple[str, float, float, int]] = []
    errors: dict[str, int] = {}
    skipped = 0
    bodies = [json.dumps({"type": EVENT_TYPE, "data": payload(i, size)}).encode()
              for i in range(min(total, 1000))]
    connector = aiohttp.TCPConnector(limit=max_pending, limit_per_host=0)
    pending: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=connector) as http:
        async def one(i: int) -> None:
            sent = time.time()
            try:
                async with http.post(url + "/v1/events", data=bodies[i % len(bodies)],
                                     headers={"content-type": "application/json"},
                                     timeout=aiohttp.ClientTimeout(total=30)) as resp:
                    doc = await resp.read()
                    if resp.status == 202:
                        records.append((json.loads(doc)["id"], sent, time.time(), 202))
                    else:
                        errors[f"HTTP {resp.status}"] = errors.get(f"HTTP {resp.status}", 0) + 1
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        start = time.monotonic() + 0.05
        cpu0 = cpu_seconds()
        behind = 0.0
        for i in range(total):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                behind = max(behind, -delay)
            if time.monotonic() - start > duration * 2 + 5:  # hard bound on a stuck run
                skipped = total - i
                break
            if len(pending) >= max_pending:
                skipped += 1  # the gateway stopped keeping up; counted, not queued here
                continue
            task = asyncio.create_task(one(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
        sent_for = time.monotonic() - start
        if pending:
            await asyncio.wait(pending, timeout=30)
        cpu1 = cpu_seconds()
    return {"mode": "rate", "target_rate": rate, "duration": duration, "planned": total,
            "accepted": len(records), "skipped": skipped, "errors": errors,
            "send_seconds": sent_for, "max_behind_s": behind, "cpu_seconds": cpu1 - cpu0,
            "records": records}


async def run_ceiling(url: str, count: int, concurrency: int, size: int, endpoints: int,
                      timeout: float) -> dict[str, Any]:
    """``count`` POSTs with at most ``concurrency`` under way, round-robin over the sink
    paths of ``endpoints`` endpoints, as ``Sender`` would make them minus the signature."""
    now = time.time()
    bodies = [build_event(IngestRequest(type=EVENT_TYPE, data=payload(i, size)), now).body
              for i in range(min(count, 1000))]
    # Sender.open(), verbatim: the same connector, resolver, cookie jar and decompression.
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0, ttl_dns_cache=60,
                                     enable_cleanup_closed=True,
                                     resolver=GuardedResolver(AddressPolicy(LOOPBACK_CIDRS)))
    session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                    auto_decompress=False)
    next_n = 0
    ok = 0
    errors: dict[str, int] = {}
    deadline = time.monotonic() + timeout

    async def worker() -> None:
        nonlocal next_n, ok
        while next_n < count and time.monotonic() < deadline:
            n = next_n
            next_n += 1
            headers = {"webhook-id": f"ceil_{n}", "webhook-timestamp": str(int(now)),
                       "content-type": "application/json", "user-agent": USER_AGENT}
            try:
                async with session.post(f"{url}/ep{n % endpoints}", data=bodies[n % len(bodies)],
                                        headers=headers, allow_redirects=False,
                                        timeout=aiohttp.ClientTimeout(total=5.0)) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        ok += 1
                    else:
                        errors[f"HTTP {resp.status}"] = errors.get(f"HTTP {resp.status}", 0) + 1
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    # The gateway's runtime, garbage collector settings included (see gateway.settle_heap)
    settle_heap()
    cpu0, t0 = cpu_seconds(), time.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu1, t1 = cpu_seconds(), time.time()
    await session.close()
    return {"mode": "ceiling", "count": count, "ok": ok, "errors": errors, "started": t0,
            "finished": t1, "cpu_seconds": cpu1 - cpu0, "concurrency": concurrency}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("rate")
    r.add_argument("--url", required=True)
    r.add_argument("--rate", type=float, required=True)
    r.add_argument("--duration", type=float, required=True)
    r.add_argument("--size", type=int, default=1024)
    r.add_argument("--max-pending", type=int, default=2000)
    c = sub.add_parser("ceiling")
    c.add_argument("--url", required=True)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--concurrency", type=int, default=256)
    c.add_argument("--size", type=int, default=1024)
    c.add_argument("--endpoints", type=int, default=1)
    c.add_argument("--timeout", type=float, default=120.0)
    for q in (r, c):
        q.add_argument("--uvloop", action="store_true")
        q.add_argument("--out", required=True)
    args = p.parse_args(argv)
    install_loop(args.uvloop)
    if args.mode == "rate":
        result = asyncio.run(run_rate(args.url, args.rate, args.duration, args.size,
                                      args.max_pending))
    else:
        result = asyncio.run(run_ceiling(args.url, args.count, args.concurrency, args.size,
                                         args.endpoints, args.timeout))
    with open(args.out, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
