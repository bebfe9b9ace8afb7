"""A real ``redis-server`` for the tests: started on a free loopback port, with AOF on.

Tests that need Redis talk to a real one, so what they prove holds in production: Lua
scripts, stream semantics, persistence across a restart and the errors a client sees when
the server goes away. :meth:`RedisServer.stop` and :meth:`RedisServer.start` restart it on
the same port and data directory, which is how "a Redis restart loses nothing" is tested.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["INSTALL_HINT", "RedisServer", "find_redis_server", "free_port"]

INSTALL_HINT = ("redis-server is not installed; install it (Debian/Ubuntu: "
                "`apt-get install redis-server`, macOS: `brew install redis`) or set "
                "HOOKGATE_REDIS_SERVER to its path")


def find_redis_server() -> str | None:
    """The redis-server binary: ``$HOOKGATE_REDIS_SERVER``, then ``PATH``, then /usr/bin."""
    explicit = os.environ.get("HOOKGATE_REDIS_SERVER")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None


def free_port() -> int:
    """A TCP port nothing listens on at the moment (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process with its own data directory; restartable in place."""

    def __init__(self, binary: str, directory: Path, port: int | None = None) -> None:
        self.binary = binary
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart) on the same port and directory; returns once it answers PING."""
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                 "--dir", str(self.directory), "--protected-mode", "no"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not _ping(self.port):  # polling a process we do not control; nothing to await
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}; "
                                   f"see {self.log}")
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise RuntimeError(f"redis-server did not answer PING within {timeout}s; "
                                   f"see {self.log}")
            time.sleep(0.02)

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM (clean shutdown) or SIGKILL (a crash)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self.process = None
