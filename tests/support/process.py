"""Child processes the tests run: restartable servers, the ``hookgate`` command, and
``hookgate run`` as a gateway process.

Waits are bounded (:mod:`tests.support.waiting`); a child that exits early fails the wait
with its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from tests.support.ports import unused_port
from tests.support.waiting import WaitTimeout, wait_for, wait_for_blocking

__all__ = ["RUN_OPTIONS", "GatewayProcess", "Probe", "ServerProcess", "listening", "readyz",
           "run_hookgate", "sources_ready", "status_ok"]


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class ServerProcess:
    """A server process with a port and a directory, restartable in place (same port, same
    data), which is how "the server restarted" is tested."""

    name = "server"
    start_timeout = 60.0
    poll_interval = 0.1

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or unused_port()  # on the command line: the child binds it
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def ready(self) -> bool:
        return listening(self.port)

    def prepare(self) -> None:
        """Once, before the first start (format storage, ...)."""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start (or restart); returns once :meth:`ready`."""
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env(), start_new_session=True,
                                            cwd=self.directory)
        process = self.process

        def up() -> bool:  # polling a process we do not control: nothing to await
            if process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {process.returncode}; see "
                                   f"{self.log}:\n{self.log.read_text()[-3000:]}")
            return self.ready()

        try:
            wait_for_blocking(up, timeout=self.start_timeout, interval=self.poll_interval,
                              what=f"{self.name} to start (log: {self.log})")
        except WaitTimeout:
            self.stop(kill=True)
            raise

    def stop(self, *, kill: bool = False, timeout: float = 30.0) -> None:
        """Stop the server: SIGTERM (a clean shutdown) or SIGKILL (a crash)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        self.process = None
        wait_for_blocking(lambda: not listening(self.port), timeout=timeout,
                          interval=self.poll_interval, what=f"{self.name}'s port to close")


def terminate(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM ``process`` and wait for it; SIGKILL it if it outlives ``timeout``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def run_hookgate(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m hookgate ARGS`` as a user runs it, to completion."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "hookgate", *args], capture_output=True,
        text=True, timeout=timeout)


# -- hookgate run as a child process -------------------------------------------------------

Probe = Callable[[aiohttp.ClientSession, str], Awaitable[bool]]
"""Whether the gateway at a base URL is ready, asked through the session."""


def status_ok(path: str) -> Probe:
    """Ready when GET ``path`` answers 200."""
    async def probe(http: aiohttp.ClientSession, url: str) -> bool:
        async with http.get(url + path) as resp:
            return resp.status == 200
    return probe


readyz = status_ok("/readyz")


async def sources_ready(http: aiohttp.ClientSession, url: str) -> bool:
    """Ready when the gateway's first source consumes (GET /v1/sources)."""
    async with http.get(url + "/v1/sources") as resp:
        doc = await resp.json()
        return bool(doc["items"] and doc["items"][0]["ready"])


RUN_OPTIONS = ("--concurrency", "64", "--grace", "20", "--visibility-timeout", "3")
"""What the tests that kill, restart or run two gateway processes give ``hookgate run``: a
short lease, so what a killed process held is delivered again within seconds."""

_LISTENING = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")


class GatewayProcess:
    """``python -m hookgate run`` as a child process: what SIGKILL and SIGTERM are sent to.

    It listens on a port it picks itself (``--listen 127.0.0.1:0``) and logs; :meth:`start`
    reads the port from the log, then waits until ``ready`` says so.
    """

    def __init__(self, config: Path, data: Path, log: Path, *options: str,
                 queue: str | None = None, ready: Probe = readyz,
                 ready_timeout: float = 20.0, what: str = "the gateway to be ready") -> None:
        self.args = [sys.executable, "-m", "hookgate", "run", "--config", str(config),
                     "--data-dir", str(data), *(["--queue", queue] if queue else []),
                     "--listen", "127.0.0.1:0", "--log-format", "text", *options]
        self.log = log
        self.ready, self.ready_timeout, self.what = ready, ready_timeout, what
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        assert self.port, "the gateway process has not started"
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        self._log_from = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)

    def _alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, \
            f"the gateway exited with {self.proc and self.proc.returncode}:\n" \
            + self.log.read_text()[-3000:]

    async def start(self, http: aiohttp.ClientSession) -> None:
        self.spawn()

        def port() -> int:
            self._alive()
            with self.log.open("rb") as f:
                f.seek(self._log_from)
                found = _LISTENING.search(f.read())
            return int(found.group(1)) if found else 0

        self.port = await wait_for(port, timeout=self.ready_timeout,
                                   what="the gateway to log its port")

        async def ready() -> bool:
            self._alive()
            return await self.ready(http, self.url)

        await wait_for(ready, timeout=self.ready_timeout, what=self.what,
                       ignoring=(aiohttp.ClientError,))

    async def successes(self, http: aiohttp.ClientSession) -> float:
        """How many deliveries succeeded, by the gateway's metrics."""
        async with http.get(self.url + "/metrics") as resp:
            text = await resp.text()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("hookgate_deliveries_total{") and "success" in line)

    async def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
