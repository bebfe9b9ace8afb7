"""A real ``redis-server`` for the tests: started on a free loopback port, with AOF on.

Tests that need Redis talk to a real one, so what they prove holds in production: Lua
scripts, stream semantics, persistence across a restart and the errors a client sees when
the server goes away. :meth:`RedisServer.stop` and :meth:`RedisServer.start` restart it on
the same port and data directory, which is how "a Redis restart loses nothing" is tested.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from tests.support.process import ServerProcess

__all__ = ["INSTALL_HINT", "RedisServer", "find_redis_server"]

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


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(ServerProcess):
    """One redis-server process with its own data directory; restartable in place."""

    name = "redis"
    start_timeout = 10.0
    poll_interval = 0.02

    def __init__(self, binary: str, directory: Path, port: int | None = None) -> None:
        self.binary = binary
        super().__init__(directory, port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--dir", str(self.directory), "--protected-mode", "no"]

    def ready(self) -> bool:
        return _ping(self.port)
