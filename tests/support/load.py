"""A paced, bounded load of events posted to a gateway, for the failover tests: what was
acknowledged (202) and when, what was refused (503 or no answer), and one thing done once
after a given number of acknowledgements (killing a server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

__all__ = ["Offered", "offer_events"]


@dataclass
class Offered:
    acknowledged: list[str] = field(default_factory=list)  # event ids, in order of answer
    answered_at: list[float] = field(default_factory=list)  # monotonic time of each 202
    refused: int = 0
    mark: int | None = None  # how many were acknowledged when the action ran
    marked_at: float = 0.0

    @property
    def after_mark(self) -> set[str]:
        """Events acknowledged after the action."""
        return set(self.acknowledged[self.mark or 0:]) if self.mark is not None else set()

    @property
    def recovered_in(self) -> float | None:
        """Seconds from the action to the first event acknowledged after it."""
        if self.mark is None or self.mark >= len(self.answered_at):
            return None
        return self.answered_at[self.mark] - self.marked_at


async def offer_events(http: aiohttp.ClientSession, url: str, *, events: int, rate: float,
                       seconds: float, act_after: int,
                       act: Callable[[], Awaitable[None]]) -> Offered:
    """Post up to ``events`` events to ``url``/v1/events at ``rate`` per second, for at most
    ``seconds``; once ``act_after`` are acknowledged, await ``act()`` (the load goes on while
    it runs only as far as ``act`` itself returns at once). Returns when every post ended."""
    out = Offered()

    async def send(n: int) -> None:
        try:
            async with http.post(url + "/v1/events",
                                 json={"type": "tick", "data": {"n": n}}) as resp:
                if resp.status == 202:
                    out.acknowledged.append((await resp.json())["id"])
                    out.answered_at.append(time.monotonic())
                else:
                    assert resp.status == 503, await resp.text()
                    out.refused += 1
        except aiohttp.ClientError:
            out.refused += 1

    tasks: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    for n in range(events):
        if time.monotonic() - started > seconds:
            break
        task = asyncio.create_task(send(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if out.mark is None and len(out.acknowledged) >= act_after:
            out.mark, out.marked_at = len(out.acknowledged), time.monotonic()
            await act()
        await asyncio.sleep(1 / rate)  # pacing the offered load, not a wait
    await asyncio.gather(*tasks)
    return out
