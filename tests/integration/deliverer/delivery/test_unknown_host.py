"""An endpoint whose host name does not resolve: retried on its schedule, a clear error in the
attempt log, a dead letter at the end, and the gateway keeps delivering to the others.

The deliverer is ``hookgate run``, in a network namespace of the test's own
(:mod:`tests.support.netns`), so its lookups go through glibc's ``getaddrinfo`` (under
uvloop when installed, as in production) to a real authoritative DNS server on 127.0.0.1:53
there (:class:`tests.support.dns.TestDNS`), never to the host's resolver. The server knows
``hooks.known.test`` (a receiver on 127.0.0.1) and answers NXDOMAIN for anything else, such
as ``no-such-host.test``. The scenario runs in the child and returns what it saw; the
assertions are here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.dns import TestDNS
from tests.support.manifests import endpoint_yaml, subscription_yaml
from tests.support.netns import run_in_netns
from tests.support.process import GatewayProcess
from tests.support.receiver import Recorder
from tests.support.waiting import wait_for

UNKNOWN, KNOWN = "no-such-host.test", "hooks.known.test"
MODULE = __name__


async def gateway_scenario(work: Path) -> dict[str, Any]:
    """One event to both endpoints, the unknown one retried until it is a dead letter; then
    an event to the known endpoint only, delivered by the same process."""
    seen: dict[str, Any] = {}
    with TestDNS({KNOWN: ["127.0.0.1"]}, port=53) as dns:
        receiver = Recorder()
        await receiver.start()
        config = work / "config"
        config.mkdir()
        (config / "hooks.yaml").write_text(
            endpoint_yaml("ghost", f"http://{UNKNOWN}/in", schedule="[0s, 100ms, 100ms]")
            + subscription_yaml("orders", "ghost", '["order.*"]')
            + endpoint_yaml("known", f"http://{KNOWN}:{receiver.port}/in")
            + subscription_yaml("all", "known", '["*"]'))
        gw = GatewayProcess(config, work / "data", work / "gateway.log", "--grace", "5")
        async with aiohttp.ClientSession() as http:
            async def send(type_: str) -> str:
                async with http.post(gw.url + "/v1/events",
                                     json={"type": type_, "data": {}}) as r:
                    assert r.status == 202, await r.text()
                    return str((await r.json())["id"])

            async def letters() -> list[dict[str, Any]]:
                async with http.get(gw.url + "/v1/dead-letters?endpoint=ghost") as resp:
                    return list((await resp.json())["items"])

            await gw.start(http)
            try:
                event_id = await send("order.created")
                (letter,) = await wait_for(letters, timeout=30,
                                           what="the dead letter of the unknown host")
                async with http.get(gw.url + f"/v1/events/{event_id}") as resp:
                    record = await resp.json()
                seen["event_id"] = event_id
                seen["letter"] = {k: letter[k] for k in ("event_id", "endpoint", "reason",
                                                         "attempts")}
                seen["attempts"] = [(a["endpoint"], a["outcome"], a["status"], a["error"])
                                    for a in record["attempts"]]
                seen["unknown_queries"] = [list(q.answered) for q in dns.asked(UNKNOWN)]
                # the same process goes on serving: ingest, health and the other endpoint
                ping = await send("ping")
                await receiver.wait_for(lambda r: len(r) == 2, timeout=20,
                                        what="the ping to the known endpoint")
                seen["delivered"] = [(json.loads(r.body)["type"], r.webhook_id)
                                     for r in receiver.received]
                seen["ping"] = ping
                async with http.get(gw.url + "/healthz") as resp:
                    seen["healthz"] = resp.status
                seen["alive"] = gw.proc is not None and gw.proc.poll() is None
            finally:
                assert gw.proc is not None
                gw.proc.terminate()
                await gw.wait_exit()
        await receiver.stop()
    seen["log"] = (work / "gateway.log").read_text()
    return seen


@pytest.mark.timeout(120)
def test_hookgate_run_retries_an_unknown_host_then_dead_letters_it(tmp_path: Path) -> None:
    seen = run_in_netns(f"{MODULE}:gateway_scenario", tmp_path, timeout=100)
    error = (f"cannot connect to {UNKNOWN}:80: the host name does not resolve (Name or "
             "service not known); check the host in the endpoint's URL and the DNS the "
             "deliverer uses")
    # one attempt per schedule entry (0s, 100ms, 100ms), each saying why, the last one dead
    ghost = [a for a in seen["attempts"] if a[0] == "default/ghost"]
    assert ghost == [["default/ghost", "retry", None, error],
                     ["default/ghost", "retry", None, error],
                     ["default/ghost", "dead", None, error]], seen["attempts"]
    assert seen["letter"] == {"event_id": seen["event_id"], "endpoint": "default/ghost",
                              "reason": "Exhausted", "attempts": 3}
    # each attempt asked the DNS server again (a failed lookup is not cached) and got no
    # address: NXDOMAIN, as for any name the server does not know
    assert seen["unknown_queries"] == [[], [], []], seen["unknown_queries"]
    # the same event reached the endpoint whose name resolves, and so did a later one
    assert seen["delivered"] == [["order.created", seen["event_id"]], ["ping", seen["ping"]]]
    assert seen["healthz"] == 200 and seen["alive"] is True
    assert "Traceback" not in seen["log"], seen["log"][-3000:]
