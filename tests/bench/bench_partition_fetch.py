"""The queue alone: time from enqueue to the return of the fetch that leased it, with 1 and
with 4 partitions, on one throwaway redis-server on loopback.

    python tests/bench/bench_partition_fetch.py [--rounds 3] [--events 2500] [--rate 500]

One producer enqueues at ``--rate`` events/s; one consumer fetches (64 at a time, waiting up
to 1 s) as the dispatcher does; no HTTP, no deliverer process. It isolates what partitions
add to the fetch path, and stays readable when the machine is too busy for
bench_partitions.py (its gateway is then starved of CPU). Run it from the checkout to
measure (``sys.path[0]`` is that checkout's ``hookgate``); alternate checkouts to compare.
Configurations alternate (P=4, P=1, then P=1, P=4) within each round. Not a test: never
collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hookgate.deliverer.queues.base import Event, Queue  # noqa: E402
from hookgate.deliverer.queues.redis.partitions import PartitionedQueue  # noqa: E402
from hookgate.deliverer.queues.redis.queue import RedisQueue  # noqa: E402
from tests.support.redis_server import RedisServer, find_redis_server  # noqa: E402


def make(url: str, partitions: int) -> Queue:
    gateway = f"bench/p{partitions}"
    if partitions > 1:
        return PartitionedQueue(url, gateway=gateway, partitions=partitions)
    return RedisQueue(url, gateway=gateway)


async def one_run(url: str, partitions: int, events: int, rate: float) -> tuple[float, float]:
    """p50 and p99 in ms of enqueue -> fetch returned."""
    producer, consumer = make(url, partitions), make(url, partitions)
    await producer.open()
    await consumer.open()
    sent: dict[str, float] = {}
    latencies: list[float] = []

    async def consume() -> None:
        while len(latencies) < events:
            batch = await consumer.fetch(64, wait=1.0)
            now = time.perf_counter()
            latencies.extend(now - sent[d.event.id] for d in batch)

    reader = asyncio.create_task(consume())
    start = time.perf_counter()
    for i in range(events):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[f"e{i}"] = time.perf_counter()
        await producer.enqueue(Event(id=f"e{i}", type="t", body=b"{}",
                                     accepted_at=time.time()), ["bench/a"])
    await asyncio.wait_for(reader, 60)
    await producer.close()
    await consumer.close()
    latencies.sort()
    return (latencies[len(latencies) // 2] * 1000,
            latencies[int(0.99 * (len(latencies) - 1))] * 1000)


def flush(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"FLUSHALL SYNC\r\n")
        s.recv(64)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--events", type=int, default=2500)
    p.add_argument("--rate", type=float, default=500.0)
    args = p.parse_args()
    binary = find_redis_server()
    if binary is None:
        raise SystemExit("redis-server is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(binary, Path(tmp))
        server.start()
        try:
            for n in range(args.rounds):
                for partitions in ((4, 1) if n % 2 == 0 else (1, 4)):
                    flush(server.port)
                    p50, p99 = await one_run(server.url, partitions, args.events, args.rate)
                    load = os.getloadavg()[0]
                    print(f"round {n + 1} P={partitions}: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
                          f"(1-minute load {load:.1f})", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
