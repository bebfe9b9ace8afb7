"""A fallback sink for the benchmarks when nginx is not installed: answers 204 to everything
and logs ``<unix time> <path> <webhook-id>`` a line, like the nginx sink's access log.

SIGUSR1 flushes and reopens the log (the harness renames it first, as with nginx). It is
slower than nginx, so figures measured with it say so. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from typing import IO

from aiohttp import web


class Sink:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: list[str] = []
        self.fh: IO[str] = open(path, "a")  # noqa: SIM115 - reopened on SIGUSR1

    def flush(self) -> None:
        if self.lines:
            self.fh.write("".join(self.lines))
            self.lines.clear()
        self.fh.flush()

    def reopen(self) -> None:
        self.flush()
        self.fh.close()
        self.fh = open(self.path, "a")  # noqa: SIM115

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.lines.append(f"{time.time():.4f} {request.path} "
                          f"{request.headers.get('webhook-id', '-')}\n")
        return web.Response(status=204)

    async def flusher(self) -> None:
        while True:  # ends with the process
            await asyncio.sleep(0.2)
            self.flush()


async def serve(port: int, path: str) -> None:
    sink = Sink(path)
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, sink.reopen)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    flusher = asyncio.create_task(sink.flusher())
    await stop.wait()
    flusher.cancel()
    sink.flush()
    await runner.cleanup()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port, args.log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
