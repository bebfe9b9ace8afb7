"""One reconcile loop per gateway, woken by changes and by its polling interval.

The loop is what a kopf timer or daemon would be, minus the finalizer kopf needs to stop
those: deleting a gateway never waits for the operator, and garbage collection alone
removes its children. Errors are logged once per distinct message and retried with a
capped backoff, so a broken object never floods the log with tracebacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hookgate.operator.reconcile import Reconciler

__all__ = ["Loops"]

log = logging.getLogger("hookgate.operator")

DEFAULT_INTERVAL = 5.0
MAX_BACKOFF = 60.0


class Loops:
    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self.tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.intervals: dict[tuple[str, str], float] = {}

    def ensure(self, namespace: str, name: str, interval: float | None = None) -> None:
        """Run (or keep running) the loop of this gateway, and wake it now."""
        key = (namespace, name)
        if interval:
            self.intervals[key] = interval
        if key not in self.tasks or self.tasks[key].done():
            self.tasks[key] = asyncio.create_task(self._run(namespace, name),
                                                  name=f"gateway {namespace}/{name}")
        self.reconciler.state(namespace, name).dirty.set()

    def poke_namespace(self, namespace: str) -> None:
        """Something in ``namespace`` changed: wake every gateway there."""
        for ns, name in list(self.tasks):
            if ns == namespace:
                self.reconciler.state(ns, name).dirty.set()

    async def stop(self, namespace: str, name: str) -> None:
        task = self.tasks.pop((namespace, name), None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.reconciler.forget(namespace, name)

    async def stop_all(self) -> None:
        for namespace, name in list(self.tasks):
            await self.stop(namespace, name)

    async def _run(self, namespace: str, name: str) -> None:
        state = self.reconciler.state(namespace, name)
        backoff = 1.0
        last_error = ""
        while True:
            interval = self.intervals.get((namespace, name), DEFAULT_INTERVAL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.dirty.wait(), interval)
            state.dirty.clear()
            try:
                await self.reconciler.reconcile(namespace, name)
                backoff, last_error = 1.0, ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must outlive any one failure
                message = f"{type(exc).__name__}: {exc}"
                if message != last_error:
                    log.error("reconciling gateway %s/%s failed: %s; retrying with backoff",
                              namespace, name, message, exc_info=exc)
                last_error = message
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
