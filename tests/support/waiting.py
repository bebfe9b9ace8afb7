"""Waiting for a condition with a deadline: the one way the tests wait.

- :func:`wait_for` in async tests: on an ``asyncio.Condition`` that is notified when the
  state changes (``on=``, no polling), or by asking a predicate again every ``interval``
  when the state can only be observed by asking (an HTTP API, another process).
- :func:`wait_for_blocking` in synchronous code (fixtures, threads): asking only.

Either fails with :class:`WaitTimeout`, an ``AssertionError`` that says what was awaited
and what was last seen, so a red run says why.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

__all__ = ["WaitTimeout", "wait_for", "wait_for_blocking"]

T = TypeVar("T")
Ignored = tuple[type[BaseException], ...]


class WaitTimeout(AssertionError):
    """A condition did not hold in time (fails the test rather than erroring it)."""

    def __init__(self, what: str, timeout: float, last: object) -> None:
        super().__init__(f"timed out after {timeout:g}s waiting for {what}; last saw {last!r}")


@overload
async def wait_for(predicate: Callable[[], Awaitable[T]], *, timeout: float = ..., what: str,
                   on: None = ..., state: Callable[[], object] | None = ...,
                   interval: float = ..., ignoring: Ignored = ...) -> T: ...


@overload
async def wait_for(predicate: Callable[[], T], *, timeout: float = ..., what: str,
                   on: asyncio.Condition | None = ..., state: Callable[[], object] | None = ...,
                   interval: float = ..., ignoring: Ignored = ...) -> T: ...


async def wait_for(predicate: Callable[[], Any], *, timeout: float = 10.0, what: str,
                   on: asyncio.Condition | None = None,
                   state: Callable[[], object] | None = None, interval: float = 0.02,
                   ignoring: Ignored = ()) -> Any:
    """Return the first truthy result of ``predicate`` within ``timeout`` seconds.

    With ``on``, ``predicate`` (synchronous) is checked under the condition each time it is
    notified. Without, ``predicate`` (synchronous or a coroutine function) is asked every
    ``interval`` seconds; exceptions listed in ``ignoring`` count as "not yet". On timeout
    the error shows ``state()`` if given, else the last result or exception.
    """
    last: object = None
    if on is not None:
        condition = on

        async def notified() -> Any:
            async with condition:
                return await condition.wait_for(predicate)
        try:
            return await asyncio.wait_for(notified(), timeout)
        except TimeoutError:
            raise WaitTimeout(what, timeout, state() if state else None) from None
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
        except ignoring as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            raise WaitTimeout(what, timeout, state() if state else last)
        await asyncio.sleep(interval)


def wait_for_blocking(predicate: Callable[[], T], *, timeout: float = 10.0, what: str,
                      interval: float = 0.05, ignoring: Ignored = ()) -> T:
    """:func:`wait_for` for synchronous code: ask ``predicate`` every ``interval``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
        except ignoring as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            raise WaitTimeout(what, timeout, last)
        time.sleep(interval)
