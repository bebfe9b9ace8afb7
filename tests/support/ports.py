"""Loopback ports for test servers, without a pick-then-bind race.

A server the tests run in their own process binds port 0 itself (or takes the socket from
:func:`loopback_socket`) and reports the port it got: no other process can take it meanwhile.

Only a child process that needs a port number on its command line and cannot be handed a
socket (redis-server, the brokers, ``hookgate operator --liveness``) uses
:func:`unused_ports`: the kernel's pick, released just before the child binds it.
"""

from __future__ import annotations

import contextlib
import socket

__all__ = ["loopback_socket", "port_of", "unused_port", "unused_ports"]


def loopback_socket() -> socket.socket:
    """A TCP socket bound to 127.0.0.1 on a port the kernel picked.

    Hand it to a server (``aiohttp.web.SockSite``, ``loop.create_server(sock=...)``), which
    listens on it. Held without listening it is a port where connections are refused, for
    as long as the test keeps it open.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
    except OSError:
        sock.close()
        raise
    return sock


def port_of(sock: socket.socket) -> int:
    """The port a bound (or listening) socket has."""
    return int(sock.getsockname()[1])


def unused_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports nothing listens on at the moment.

    Only for a child process that takes a port number and cannot take a socket: the ports
    are free when returned, and another process could take one before the child binds it.
    All are held open until all are chosen, so they are distinct.
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(loopback_socket()) for _ in range(count)]
        return [port_of(s) for s in socks]


def unused_port() -> int:
    """One port for a child process's command line; see :func:`unused_ports`."""
    return unused_ports(1)[0]
