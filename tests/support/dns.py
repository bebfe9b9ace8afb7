"""A real, authoritative DNS server for tests: answers from a table the test changes.

``TestDNS`` answers UDP queries with dnslib's server (wire format parsed and written by
dnslib, one thread): ``A`` queries for a name in :attr:`TestDNS.records` get its addresses
with TTL 0, other types of a known name get an empty answer (NODATA: the name exists, it
has no such record), unknown names get NXDOMAIN. Changing the table (:meth:`TestDNS.point`)
changes the next answer: that is how a test rebinds a name. Every query is recorded, so a
test can tell whether a name really was resolved again.

It binds port 0 by default and says which port it got; system resolvers only ask port 53,
which a test gets inside a network namespace of its own (:mod:`tests.support.netns`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Self

from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import DNSLogger, DNSServer

__all__ = ["Query", "TestDNS"]


@dataclass(frozen=True)
class Query:
    name: str  # without the trailing dot, lower case
    type: str  # "A", "AAAA", ...
    answered: tuple[str, ...]  # the addresses in the answer


class _Table:
    """dnslib's resolver interface over the test's table (called on the server's thread)."""

    def __init__(self, dns: TestDNS) -> None:
        self.dns = dns

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        reply = request.reply()  # the question copied, qr and aa set
        reply.header.ra = 0  # authoritative only: no recursion for anyone
        with self.dns.lock:
            addresses = self.dns.records.get(name)
            answered: tuple[str, ...] = ()
            if addresses is None:
                reply.header.rcode = RCODE.NXDOMAIN
            elif qtype == "A":
                answered = tuple(addresses)
                for address in answered:
                    reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=0))
            self.dns.queries.append(Query(name, qtype, answered))
        return reply


class TestDNS:
    """``with TestDNS({"hooks.test": ["127.0.0.2"]}, port=53) as dns: ...``"""

    __test__ = False  # a helper, not a test class for pytest to collect

    def __init__(self, records: dict[str, list[str]] | None = None, *,
                 address: str = "127.0.0.1", port: int = 0) -> None:
        self.lock = threading.Lock()
        self.records: dict[str, list[str]] = {k.lower(): list(v)
                                              for k, v in (records or {}).items()}
        self.queries: list[Query] = []
        # logf: dnslib's logger prints every query and reply to stdout otherwise
        self._server = DNSServer(_Table(self), address=address, port=port,
                                 logger=DNSLogger("-request,-reply", logf=lambda _s: None))
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server.server_address[:2]
        return str(host), int(port)

    def point(self, name: str, *addresses: str) -> None:
        """From the next query on, ``name`` resolves to ``addresses``."""
        with self.lock:
            self.records[name.lower()] = list(addresses)

    def asked(self, name: str, qtype: str = "A") -> list[Query]:
        """The queries for ``name`` of type ``qtype`` so far, oldest first."""
        with self.lock:
            return [q for q in self.queries if q.name == name.lower() and q.type == qtype]

    def start(self) -> None:
        # a short poll interval: stop() returns at once rather than after half a second
        self._thread = threading.Thread(target=self._server.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name="test-dns")
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server.server_close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
