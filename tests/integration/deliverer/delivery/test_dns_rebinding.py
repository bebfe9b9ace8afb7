"""DNS rebinding against the SSRF guard, with a real DNS server and the system resolver.

Each scenario runs in a network namespace of its own (:mod:`tests.support.netns`): there,
``/etc/resolv.conf`` says ``nameserver 127.0.0.1`` and a real authoritative DNS server
(:class:`tests.support.dns.TestDNS`) answers on port 53 with TTL 0 from a table the scenario
changes. The product's resolver path is unchanged: the guard's ``GuardedResolver`` around
aiohttp's default resolver, i.e. glibc's ``getaddrinfo`` (in a thread; under ``hookgate run``'s
uvloop, through libuv's thread pool), which reads resolv.conf and asks over UDP.

The name ``hooks.rebind.test`` first points at 127.0.0.2, "public" (an address the
gateway lets through), then is rebound to an address it refuses, where a receiver on the
same port would gladly answer: 127.0.0.3 for a ``Sender`` whose only exception is
``allowCIDRs: [127.0.0.2/32]``, and the cloud metadata address 169.254.169.254 (put on ``lo``
in the namespace) for ``hookgate run``, which allows all of loopback. Each scenario runs in the
child and returns what it saw; the assertions are here.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import aiohttp.connector
import pytest
from aiohttp import web

from hookgate.deliverer.delivery.sender import Response, Sender
from hookgate.signing import signing_key
from tests.support.dns import TestDNS
from tests.support.manifests import SECRET, compile_text, endpoint_yaml, subscription_yaml
from tests.support.netns import run_in_netns
from tests.support.process import GatewayProcess
from tests.support.receiver import Recorder, bound_port
from tests.support.waiting import wait_for

NAME = "hooks.rebind.test"
PUBLIC, INTERNAL = "127.0.0.2", "127.0.0.3"
METADATA = "169.254.169.254"
MODULE = __name__


@dataclass
class RecorderAt(Recorder):
    """The tests' :class:`Recorder`, listening on ``host`` rather than 127.0.0.1; it also
    keeps the client port of each request (one per connection)."""

    host: str = "127.0.0.1"
    client_ports: list[int] = field(default_factory=list)

    async def _handle(self, request: web.Request) -> web.Response:
        self.client_ports.append(request.transport.get_extra_info("peername")[1]
                                 if request.transport else 0)
        return await super()._handle(request)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = bound_port(self._runner)


@contextmanager
def aiohttp_clock_ahead(seconds: float) -> Iterator[None]:
    """aiohttp's connector sees ``seconds`` more on its monotonic clock: its DNS cache
    entries (``ttl_dns_cache``) and idle pooled connections are that much older."""
    real = time.monotonic
    with mock.patch.object(aiohttp.connector, "monotonic", lambda: real() + seconds):
        yield


# The public receiver closes each connection, so each delivery opens one (and so needs an
# address) rather than reusing the kept-alive one to the address checked first.
CLOSE = {"/in": lambda _n: {"Connection": "close"}}


def manifests(port: int) -> str:
    gateway = ("apiVersion: hookgate.io/v1alpha1\nkind: WebhookGateway\n"
               f"metadata: {{name: default}}\nspec:\n  network: {{allowCIDRs: [{PUBLIC}/32]}}\n"
               "---\n")
    return gateway + endpoint_yaml("hooks", f"http://{NAME}:{port}/in", timeout="5s")


# -- the scenario, inside the namespace -------------------------------------------------------


async def sender_scenario(work: Path) -> dict[str, Any]:
    """Three deliveries by a real Sender to ``http://hooks.rebind.test:PORT/in``: before
    the rebinding, just after it (inside the sender's DNS cache TTL), and an hour later by
    aiohttp's clock (the name is resolved again)."""
    steps: dict[str, Any] = {}
    with TestDNS({NAME: [PUBLIC]}, port=53) as dns:
        public = RecorderAt(host=PUBLIC, reply_headers=CLOSE)
        await public.start()
        internal = RecorderAt(host=INTERNAL, port=public.port)  # same port: only DNS differs
        await internal.start()
        compiled = compile_text(work, manifests(public.port), gateway="default/default")
        endpoint = compiled.config.endpoints["default/hooks"]
        # as `hookgate deliverer` builds it: the gateway's allowCIDRs are the only exceptions
        sender = Sender(max_connections=4, allow_cidrs=compiled.config.allow_cidrs)
        await sender.open()
        keys = (signing_key(SECRET),)

        def record(step: str, response: Response) -> None:
            steps[step] = {
                "status": response.status, "error": response.error,
                "refused": response.refused,
                "a_queries": [list(q.answered) for q in dns.asked(NAME)],
                "public": [r.webhook_id for r in public.received],
                "connections": len(set(public.client_ports)),
                "internal": internal.arrived("/in"),
            }

        try:
            record("first", await sender.send(endpoint, keys, "msg_first", b"{}"))
            dns.point(NAME, INTERNAL)
            record("cached", await sender.send(endpoint, keys, "msg_cached", b"{}"))
            with aiohttp_clock_ahead(3600):
                record("rebound", await sender.send(endpoint, keys, "msg_rebound", b"{}"))
        finally:
            await sender.close()
        # Controls, after the deliveries: the system resolver now gives the internal address,
        # and a receiver listens there, so only the guard stood in the way.
        resolved = sorted({info[4][0] for info in socket.getaddrinfo(
            NAME, public.port, type=socket.SOCK_STREAM)})
        with socket.create_connection((INTERNAL, internal.port), timeout=5):
            reachable = True
        await public.stop()
        await internal.stop()
    return {"steps": steps, "resolved_now": resolved, "internal_reachable": reachable,
            "internal_total": internal.arrived("/in"),
            "allow": [str(net) for net in sender.policy.allow]}


async def gateway_scenario(work: Path) -> dict[str, Any]:
    """``hookgate run`` processes deliver events to ``http://hooks.rebind.test:PORT/in``:
    one before the rebinding, one just after it (same process, inside its DNS cache TTL),
    then a process started after the rebinding (so it resolves the name again) gets one."""
    seen: dict[str, Any] = {}
    with TestDNS({NAME: [PUBLIC]}, port=53) as dns:
        public = RecorderAt(host=PUBLIC, reply_headers=CLOSE)
        await public.start()
        internal = RecorderAt(host=METADATA, port=public.port)
        await internal.start()
        config = work / "config"
        config.mkdir()
        (config / "hooks.yaml").write_text(
            endpoint_yaml("hooks", f"http://{NAME}:{public.port}/in",
                          schedule="[0s, 100ms, 100ms]")
            + subscription_yaml("all", "hooks", '["*"]'))

        def gateway(n: int) -> GatewayProcess:
            return GatewayProcess(config, work / "data", work / f"gw{n}.log", "--grace", "5")

        async def send(gw: GatewayProcess, type_: str) -> str:
            async with http.post(gw.url + "/v1/events", json={"type": type_, "data": {}}) as r:
                assert r.status == 202, await r.text()
                return str((await r.json())["id"])

        def types() -> list[str]:  # of the events the public receiver got, in order
            return [str(json.loads(r.body)["type"]) for r in public.received]

        async def stop(gw: GatewayProcess) -> None:
            assert gw.proc is not None
            gw.proc.terminate()  # SIGTERM: a graceful stop
            await gw.wait_exit()

        async with aiohttp.ClientSession() as http:
            first = gateway(0)
            await first.start(http)
            try:
                await send(first, "before")
                await public.wait_for(lambda r: len(r) == 1, what="the first delivery")
                seen["before"] = {"a_queries": _answers(dns), "public": types()}
                dns.point(NAME, METADATA)
                await send(first, "cached")
                await public.wait_for(lambda r: len(r) == 2, what="the second delivery")
                seen["cached"] = {"a_queries": _answers(dns), "public": types(),
                                  "connections": len(set(public.client_ports))}
            finally:
                await stop(first)
            second = gateway(1)
            await second.start(http)
            try:
                event_id = await send(second, "rebound")

                async def letters() -> list[dict[str, Any]]:
                    async with http.get(second.url + "/v1/dead-letters") as resp:
                        return list((await resp.json())["items"])

                (letter,) = await wait_for(letters, timeout=20, what="the refused delivery")
                async with http.get(second.url + f"/v1/events/{event_id}") as resp:
                    attempts = (await resp.json())["attempts"]
                seen["rebound"] = {"a_queries": _answers(dns), "public": types(),
                                   "letter": {k: letter[k] for k in ("event_id", "reason",
                                                                     "attempts")},
                                   "event_id": event_id,
                                   "attempts": [(a["outcome"], a["status"], a["error"])
                                                for a in attempts]}
            finally:
                await stop(second)
        with socket.create_connection((METADATA, internal.port), timeout=5):
            seen["internal_reachable"] = True
        seen["internal"] = internal.arrived("/in")
        await public.stop()
        await internal.stop()
    return seen


def _answers(dns: TestDNS) -> list[list[str]]:
    return [list(q.answered) for q in dns.asked(NAME)]


# -- the tests --------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_name_rebound_to_a_refused_address_is_refused_when_resolved_again(
        tmp_path: Path) -> None:
    seen = run_in_netns(f"{MODULE}:sender_scenario", tmp_path, addresses=[PUBLIC, INTERNAL])
    first, cached, rebound = (seen["steps"][s] for s in ("first", "cached", "rebound"))
    assert seen["allow"] == [f"{PUBLIC}/32"]

    # before the rebinding: resolved by DNS, checked, delivered to the public address
    assert (first["status"], first["error"]) == (204, None)
    assert first["a_queries"] == [[PUBLIC]] and first["public"] == ["msg_first"]

    # just after: aiohttp's DNS cache (ttl_dns_cache) still holds the answer the guard had
    # already filtered, so the delivery goes to the public address again, asking no one
    assert (cached["status"], cached["error"]) == (204, None)
    assert cached["a_queries"] == [[PUBLIC]], "the cached answer was used"
    assert cached["public"] == ["msg_first", "msg_cached"]
    assert cached["connections"] == 2, "a new connection, so an address was looked up"

    # once the cache entry has expired the name is resolved again: the DNS server was asked
    # and answered the internal address, which the guard refused before any connection
    assert rebound["a_queries"] == [[PUBLIC], [INTERNAL]], "the name was resolved again"
    assert rebound["status"] is None and rebound["refused"] is True
    assert rebound["error"] == (
        f"{NAME} resolves to a refused address: address {INTERNAL} is loopback; allow it "
        "with network.allowCIDRs on the WebhookGateway if the endpoint is meant to be "
        "reached there")
    assert rebound["public"] == ["msg_first", "msg_cached"]

    # the internal receiver was there all along, reachable, and got nothing
    assert seen["resolved_now"] == [INTERNAL] and seen["internal_reachable"] is True
    assert rebound["internal"] == 0 and seen["internal_total"] == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_hookgate_run_refuses_a_name_rebound_to_the_metadata_address(tmp_path: Path) -> None:
    seen = run_in_netns(f"{MODULE}:gateway_scenario", tmp_path, addresses=[PUBLIC, METADATA],
                        timeout=100)
    before, cached, rebound = seen["before"], seen["cached"], seen["rebound"]
    assert before == {"a_queries": [[PUBLIC]], "public": ["before"]}
    # the running process keeps the answer it had filtered (aiohttp's DNS cache)
    assert cached["a_queries"] == [[PUBLIC]] and cached["public"] == ["before", "cached"]
    assert cached["connections"] == 2
    # a process started after the rebinding asks again, gets the metadata address, and the
    # delivery is refused at once: a dead letter after one attempt, nothing sent
    assert rebound["a_queries"] == [[PUBLIC], [METADATA]]
    assert rebound["letter"] == {"event_id": rebound["event_id"], "reason": "AddressRefused",
                                 "attempts": 1}
    assert rebound["attempts"] == [["dead", None, (
        f"{NAME} resolves to a refused address: address {METADATA} is a cloud metadata "
        "address; allow it with network.allowCIDRs on the WebhookGateway if the endpoint is "
        "meant to be reached there")]]
    assert rebound["public"] == ["before", "cached"]
    assert seen["internal_reachable"] is True and seen["internal"] == 0
