"""Servers on the host side of the node's link (10.217.0.1), where pods reach them: an HTTP
receiver that records what it gets, and a redis-server for deliverers in cluster mode."""

from __future__ import annotations

import http.server
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.ci import unavailable
from tests.support.redis_server import INSTALL_HINT, RedisServer, find_redis_server

__all__ = ["Delivery", "HostReceiver", "host_redis"]


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def event(self) -> Any:
        return json.loads(self.body)


class HostReceiver:
    """An HTTP receiver on ``host``: answers every POST 204 and records it. With ``delay``
    set it answers that many seconds later (recording at once), so deliveries are in
    flight for a while."""

    def __init__(self, host: str) -> None:
        self.delay = 0.0
        self.received: list[Delivery] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                delivery = Delivery(self.path, {k.lower(): v for k, v in self.headers.items()},
                                    body)
                with outer.lock:
                    outer.received.append(delivery)
                if outer.delay:
                    time.sleep(outer.delay)  # a slow receiver, not a wait
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def deliveries(self, path: str | None = None) -> list[Delivery]:
        with self.lock:
            return [d for d in self.received if path is None or d.path == path]

    def __enter__(self) -> HostReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def host_redis(host: str, directory: Path) -> RedisServer:
    """A started redis-server on loopback and on ``host`` (the pods' way to it); the caller
    stops it. Its ``url`` is the loopback one, for the test itself."""
    binary = find_redis_server()
    if binary is None:
        unavailable(INSTALL_HINT)
    server = RedisServer(binary, directory, extra=["--bind", "127.0.0.1", host])
    server.start()
    return server
