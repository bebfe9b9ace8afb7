"""Delivery policies end to end, against real receivers on loopback, on both queues.

SSRF guard, CEL filters, circuit breaker, 410 pause and resume, auto-disable with
operational events, endpoint auth (basic, bearer, mTLS with a CA), secret rotation and v1a
signing, and isolation measured as p99 latency.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from hookgate.signing import generate_asymmetric_secret, public_key, verify_asymmetric
from tests.support.gateway import Running, StartGateway
from tests.support.manifests import SECRET, endpoint_yaml, queue_gateway_yaml, subscription_yaml
from tests.support.pki import Pki, make_pki
from tests.support.process import RUN_OPTIONS, GatewayProcess, run_hookgate
from tests.support.receiver import LoopbackReceiver, Recorder, bound_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(120)


def secret_yaml(name: str, data: dict[str, str]) -> str:
    return (f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\n"
            f"stringData: {json.dumps(data)}\n---\n")


def filtered_subscription(name: str, endpoint: str, types: str, cel: str) -> str:
    return (subscription_yaml(name, endpoint, types).removesuffix("---\n")
            + f"  filter: {json.dumps(cel)}\n---\n")


async def dead_letters(gw: Running, endpoint: str) -> list[dict[str, Any]]:
    status, doc = await gw.get(f"/v1/dead-letters?endpoint={endpoint}")
    assert status == 200, doc
    return list(doc["items"])


async def endpoint_state(gw: Running, name: str) -> dict[str, Any]:
    status, doc = await gw.get("/v1/endpoints")
    assert status == 200, doc
    return next(e for e in doc["items"] if e["endpoint"] == f"default/{name}")


# -- SSRF guard --------------------------------------------------------------------------------


async def test_loopback_is_refused_unless_allowed(start_gateway: StartGateway,
                                                  receiver: Recorder) -> None:
    port = receiver.port
    gw = await start_gateway(
        endpoint_yaml("by-name", f"http://localhost:{port}/by-name")
        + endpoint_yaml("by-ip", f"http://127.0.0.1:{port}/by-ip")
        + subscription_yaml("a", "by-name", '["*"]') + subscription_yaml("b", "by-ip", '["*"]'),
        allow_loopback=False)
    event_id = await gw.send("order.created")

    async def both_dead() -> list[dict[str, Any]]:
        letters = await dead_letters(gw, "by-name") + await dead_letters(gw, "by-ip")
        return letters if len(letters) == 2 else []

    letters = await wait_for(both_dead, what="both deliveries to be refused")
    assert {(x["reason"], x["attempts"]) for x in letters} == {("AddressRefused", 1)}
    _, doc = await gw.get(f"/v1/events/{event_id}")
    errors = sorted(a["error"] for a in doc["attempts"])
    assert len(errors) == 2 and all(a["outcome"] == "dead" for a in doc["attempts"])
    for error in errors:
        assert "127.0.0.1 is loopback; allow it with network.allowCIDRs" in error
    assert errors[0].startswith("address") and "localhost resolves to" in errors[1]
    assert receiver.received == []  # nothing was ever sent


async def test_allow_cidrs_let_an_address_through(start_gateway: StartGateway,
                                                  receiver: Recorder) -> None:
    gateway = ("apiVersion: hookgate.io/v1alpha1\nkind: WebhookGateway\n"
               "metadata: {name: default}\nspec:\n  network: {allowCIDRs: [127.0.0.0/8]}\n---\n")
    gw = await start_gateway(
        gateway + endpoint_yaml("local", f"http://localhost:{receiver.port}/ok")
        + subscription_yaml("all", "local", '["*"]'), allow_loopback=False)
    await gw.send("x")
    await receiver.wait_for(lambda r: len(r) == 1)


async def test_redirects_are_not_followed(start_gateway: StartGateway,
                                          receiver: Recorder) -> None:
    receiver.script["/moved"] = lambda n: 307
    gw = await start_gateway(endpoint_yaml("moved", receiver.url("/moved"), schedule="[0s]")
                             + subscription_yaml("all", "moved", '["*"]'))
    await gw.send("x")
    (letter,) = await wait_for(lambda: dead_letters(gw, "moved"), what="the dead letter")
    assert letter["reason"] == "Exhausted" and "HTTP 307" in letter["error"]
    assert [r.path for r in receiver.received] == ["/moved"]


# -- CEL filters -------------------------------------------------------------------------------


async def test_cel_filter_routes_by_payload_and_counts_errors(start_gateway: StartGateway,
                                                              receiver: Recorder) -> None:
    gw = await start_gateway(
        endpoint_yaml("big", receiver.url("/big")) + endpoint_yaml("all", receiver.url("/all"))
        + filtered_subscription("big-orders", "big", '["order.*"]',
                                "data.amount > 100 && type.startsWith('order.')")
        + subscription_yaml("everything", "all", '["*"]'))
    status, doc = await gw.post("/v1/events", {"type": "order.created", "data": {"amount": 5}})
    assert (status, doc["deliveries"]) == (202, 1)
    status, doc = await gw.post("/v1/events", {"type": "order.created", "data": {"amount": 500}})
    assert (status, doc["deliveries"]) == (202, 2)
    for _ in range(3):  # no amount: an evaluation error, which is no match
        status, doc = await gw.post("/v1/events", {"type": "order.created", "data": {"x": 1}})
        assert (status, doc["deliveries"]) == (202, 1)
    await receiver.wait_for(lambda r: len(r) == 6)
    (big,) = receiver.on("/big")
    assert json.loads(big.body)["data"] == {"amount": 500}
    status, text = await gw.get("/metrics")
    assert ('hookgate_filter_errors_total{gateway="default/default",'
            'subscription="default/big-orders"} 3.0') in text


# -- circuit breaker -----------------------------------------------------------------------


async def test_circuit_opens_waits_then_a_trial_closes_it(start_gateway: StartGateway,
                                                          receiver: Recorder) -> None:
    healthy = False
    receiver.script["/flaky"] = lambda n: 204 if healthy else 500
    gw = await start_gateway(
        endpoint_yaml("flaky", receiver.url("/flaky"), schedule="[0s" + ", 10ms" * 20 + "]",
                      extra="  circuitBreaker: {failureThreshold: 3, cooldown: 1500ms}\n")
        + subscription_yaml("all", "flaky", '["*"]'))
    event_id = await gw.send("x")
    await receiver.wait_for(lambda r: len(r) == 3)
    opened = time.monotonic()
    state = await wait_for(lambda: _circuit(gw, "flaky", "Open"), what="an open circuit")
    assert state["circuit"] == "Open"
    _, text = await gw.get("/metrics")
    assert 'hookgate_circuit_state{endpoint="default/flaky",gateway="default/default"} 2.0' in text
    healthy = True
    await receiver.wait_for(lambda r: len(r) == 4, timeout=15, what="the trial delivery")
    assert time.monotonic() - opened >= 1.0  # nothing went out during the cooldown
    await wait_for(lambda: _circuit(gw, "flaky", "Closed"), what="the circuit to close")
    attempts = await gw.attempts(event_id, 4)
    assert [a["status"] for a in attempts] == [500, 500, 500, 204]  # no waits counted
    assert (await gw.metric("hookgate_deliveries_postponed_total", endpoint="default/flaky",
                            reason="circuit_open") or 0) > 0


@pytest.mark.parametrize("queue", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def test_the_breaker_and_its_clock_outlive_the_deliverer_that_opened_it(
        queue: str, request: pytest.FixtureRequest, tmp_path: Path, receiver: Recorder) -> None:
    """A deliverer opens the circuit and is killed; the deliverer that comes next (a second
    one on Redis, the same one restarted on SQLite) finds it open with the same auto-disable
    clock, waits out the cooldown instead of trying at once, and one trial closes it."""
    healthy = False
    receiver.script["/flaky"] = lambda n: 204 if healthy else 500
    config = tmp_path / "config"
    config.mkdir()
    (config / "m.yaml").write_text(
        endpoint_yaml("flaky", receiver.url("/flaky"), schedule="[0s" + ", 10ms" * 20 + "]",
                      extra="  circuitBreaker: {failureThreshold: 3, cooldown: 3s}\n"
                            "  autoDisableAfter: 1h\n")
        + subscription_yaml("all", "flaky", '["*"]'))
    url = request.getfixturevalue("redis_url") if queue == "redis" else None
    data = [tmp_path / "data", tmp_path / ("data" if queue == "sqlite" else "data2")]
    procs = [GatewayProcess(config, data[i], tmp_path / f"gw{i}.log", *RUN_OPTIONS, queue=url)
             for i in range(2)]
    async with aiohttp.ClientSession() as http:

        async def state(proc: GatewayProcess, circuit: str) -> dict[str, Any] | None:
            async with http.get(proc.url + "/v1/endpoints") as resp:
                item: dict[str, Any] = (await resp.json())["items"][0]
            return item if item["circuit"] == circuit else None

        try:
            await procs[0].start(http)
            async with http.post(procs[0].url + "/v1/events",
                                 json={"type": "x", "data": {}}) as resp:
                assert resp.status == 202
            before = await wait_for(lambda: state(procs[0], "Open"), what="an open circuit")
            assert before["failingSince"] is not None
            procs[0].kill()
            await procs[1].start(http)
            # Open, or HalfOpen if starting took longer than the cooldown (a loaded machine);
            # a new process's own breaker would be Closed
            after = await state(procs[1], "Open") or await state(procs[1], "HalfOpen")
            assert after is not None, "the new deliverer does not see the open circuit"
            assert after["failingSince"] == before["failingSince"]  # the auto-disable clock
            healthy = True
            trial = (await receiver.wait_for(lambda r: len(r) == 4, timeout=30,
                                             what="the trial after the cooldown"))[-1]
            third = receiver.on("/flaky")[2]
            # a lower bound only: a slow machine makes the wait longer, never shorter
            assert trial.at - third.at >= 2.5, "the new deliverer tried before the cooldown"
            await wait_for(lambda: state(procs[1], "Closed"), what="the trial to close it")
        finally:
            for p in procs:
                p.kill()


async def _circuit(gw: Running, name: str, wanted: str) -> dict[str, Any] | None:
    state = await endpoint_state(gw, name)
    return state if state["circuit"] == wanted else None


# -- 410 Gone, resume, auto-disable, operational events ------------------------------------


OPS = ("apiVersion: hookgate.io/v1alpha1\nkind: WebhookGateway\nmetadata: {name: default}\n"
       "spec:\n  operations: {endpointRef: {name: ops}}\n---\n")


async def test_gone_pauses_the_endpoint_until_resumed(start_gateway: StartGateway,
                                                      receiver: Recorder) -> None:
    gone = True
    receiver.script["/gone"] = lambda n: 410 if gone else 204
    gw = await start_gateway(
        OPS + endpoint_yaml("gone", receiver.url("/gone"))
        + endpoint_yaml("ops", receiver.url("/ops"))
        + subscription_yaml("all", "gone", '["order.*"]'))
    first = await gw.send("order.created")
    (letter,) = await wait_for(lambda: dead_letters(gw, "gone"), what="the Gone dead letter")
    assert (letter["event_id"], letter["reason"]) == (first, "Gone")
    state = await endpoint_state(gw, "gone")
    assert (state["paused"], state["pausedBy"]) == (True, "Gone")
    second = await gw.send("order.created")

    async def held() -> bool:
        count = await gw.metric("hookgate_deliveries_postponed_total", endpoint="default/gone",
                                reason="paused")
        return (count or 0) > 0

    await wait_for(held, what="the second delivery to be held back")
    assert await gw.metric("hookgate_endpoint_paused", endpoint="default/gone") == 1.0
    assert [r.webhook_id for r in receiver.on("/gone")] == [first]
    gone = False
    resumed = await run_hookgate("endpoints", "resume", "gone", "--url", gw.url)
    assert resumed.returncode == 0 and "resumed default/gone" in resumed.stdout, resumed.stderr
    listed = await run_hookgate("endpoints", "list", "--url", gw.url)
    assert "default/gone  active  circuit=Closed" in listed.stdout
    await receiver.wait_for(lambda r: any(x.webhook_id == second for x in r), timeout=20,
                            what="the held delivery after resume")
    assert await gw.metric("hookgate_endpoint_paused", endpoint="default/gone") == 0.0
    ops = await receiver.wait_for(lambda r: len([x for x in r if x.path == "/ops"]) == 3)
    types = [json.loads(r.body)["type"] for r in ops if r.path == "/ops"]
    assert sorted(types) == ["hookgate.delivery.exhausted", "hookgate.endpoint.paused",
                             "hookgate.endpoint.resumed"]
    for r in (x for x in ops if x.path == "/ops"):
        Webhook(SECRET).verify(r.body, r.headers)  # signed like any delivery
    paused = next(json.loads(r.body)["data"] for r in ops
                  if json.loads(r.body)["type"] == "hookgate.endpoint.paused")
    assert (paused["endpoint"], paused["reason"]) == ("default/gone", "Gone")


async def test_an_endpoint_failing_for_too_long_is_auto_disabled(
        start_gateway: StartGateway, receiver: Recorder) -> None:
    receiver.script["/down"] = lambda n: 503
    gw = await start_gateway(
        OPS + endpoint_yaml("down", receiver.url("/down"), schedule="[0s" + ", 100ms" * 30 + "]",
                            extra="  autoDisableAfter: 500ms\n"
                                  "  circuitBreaker: {failureThreshold: 1000}\n")
        + endpoint_yaml("ops", receiver.url("/ops"))
        + subscription_yaml("all", "down", '["*"]'))
    await gw.send("x")
    state = await wait_for(lambda: _paused(gw, "down"), what="the endpoint to be paused")
    assert state["pausedBy"] == "AutoDisabled" and "autoDisableAfter" in state["pauseMessage"]
    ops = await receiver.wait_for(lambda r: any(x.path == "/ops" for x in r))
    event = json.loads(next(r for r in ops if r.path == "/ops").body)
    assert event["type"] == "hookgate.endpoint.paused"
    assert event["data"]["reason"] == "AutoDisabled"


async def _paused(gw: Running, name: str) -> dict[str, Any] | None:
    state = await endpoint_state(gw, name)
    return state if state["paused"] else None


# -- endpoint auth ----------------------------------------------------------------------------


async def test_basic_and_bearer_credentials_from_secrets(start_gateway: StartGateway,
                                                         receiver: Recorder) -> None:
    gw = await start_gateway(
        endpoint_yaml("basic", receiver.url("/basic"),
                      extra="  auth: {basic: {secretRef: {name: basic-creds}}}\n")
        + secret_yaml("basic-creds", {"username": "hook", "password": "s3cret:x"})
        + endpoint_yaml("bearer", receiver.url("/bearer"),
                        extra="  auth: {bearer: {secretRef: {name: token, key: value}}}\n")
        + secret_yaml("token", {"value": "tok-123\n"})
        + subscription_yaml("a", "basic", '["*"]') + subscription_yaml("b", "bearer", '["*"]'))
    await gw.send("x")
    await receiver.wait_for(lambda r: len(r) == 2)
    (basic,), (bearer,) = receiver.on("/basic"), receiver.on("/bearer")
    assert basic.headers["authorization"] == "Basic aG9vazpzM2NyZXQ6eA=="  # hook:s3cret:x
    assert bearer.headers["authorization"] == "Bearer tok-123"
    # the credentials never reach the published routing config
    assert "s3cret" not in gw.gateway.live.current.config.to_json()


@dataclass
class TlsReceiver:
    pki: Pki
    port: int = 0
    peers: list[str] = field(default_factory=list)
    runner: web.AppRunner | None = None
    got: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        for name, text in (("ca.crt", self.pki.ca), ("s.crt", self.pki.server_cert),
                           ("s.key", self.pki.server_key)):
            (self.pki.dir / name).write_text(text)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH,
                                             cafile=str(self.pki.dir / "ca.crt"))
        context.load_cert_chain(self.pki.dir / "s.crt", self.pki.dir / "s.key")
        context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no client certificate, no talk

        async def handle(request: web.Request) -> web.Response:
            transport = request.transport
            assert transport is not None
            peer = transport.get_extra_info("peercert")
            self.peers.append(dict(x[0] for x in peer["subject"])["commonName"])
            self.got.set()
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=context).start()
        self.port = bound_port(self.runner)


@pytest.fixture
async def tls_receiver(tmp_path: Path) -> AsyncIterator[TlsReceiver]:
    rec = TlsReceiver(make_pki(tmp_path))
    await rec.start()
    yield rec
    assert rec.runner is not None
    await rec.runner.cleanup()


async def test_mutual_tls_with_a_private_ca(start_gateway: StartGateway,
                                            tls_receiver: TlsReceiver) -> None:
    pki = tls_receiver.pki
    auth = ("  auth:\n    tls:\n      secretRef: {name: client-tls}\n"
            "      caFrom: {secretKeyRef: {name: private-ca}}\n")
    gw = await start_gateway(
        endpoint_yaml("mtls", f"https://127.0.0.1:{tls_receiver.port}/in", extra=auth,
                      schedule="[0s]")
        + secret_yaml("client-tls", {"tls.crt": pki.client_cert, "tls.key": pki.client_key})
        + secret_yaml("private-ca", {"ca.crt": pki.ca})
        + endpoint_yaml("no-ca", f"https://127.0.0.1:{tls_receiver.port}/no-ca",
                        schedule="[0s]")
        + subscription_yaml("a", "mtls", '["*"]') + subscription_yaml("b", "no-ca", '["*"]'))
    await gw.send("x")
    await asyncio.wait_for(tls_receiver.got.wait(), 10)
    assert tls_receiver.peers == ["hookgate-client"]
    # without the private CA the server certificate is not trusted: a failed attempt
    (letter,) = await wait_for(lambda: dead_letters(gw, "no-ca"), what="the untrusted one")
    assert "certificate" in (letter["error"] or "").lower()
    assert tls_receiver.peers == ["hookgate-client"]


async def test_a_server_certificate_for_another_name_is_refused_and_retried(
        start_gateway: StartGateway, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    (tmp_path / "wrong").mkdir()
    impostor = TlsReceiver(dataclasses.replace(
        pki, server_cert=pki.wrong_name_cert, server_key=pki.wrong_name_key,
        dir=tmp_path / "wrong"))
    await impostor.start()
    try:
        auth = ("  auth:\n    tls:\n      secretRef: {name: client-tls}\n"
                "      caFrom: {secretKeyRef: {name: private-ca}}\n")
        gw = await start_gateway(
            endpoint_yaml("named", f"https://127.0.0.1:{impostor.port}/in", extra=auth,
                          schedule="[0s, 100ms]")
            + secret_yaml("client-tls", {"tls.crt": pki.client_cert, "tls.key": pki.client_key})
            + secret_yaml("private-ca", {"ca.crt": pki.ca})
            + subscription_yaml("a", "named", '["*"]'))
        event_id = await gw.send("x")
        attempts = await gw.attempts(event_id, 2)
    finally:
        assert impostor.runner is not None
        await impostor.runner.cleanup()
    # trusted CA, wrong name: refused by the gateway, retried on the schedule, never sent
    assert [a["outcome"] for a in attempts] == ["retry", "dead"]
    assert all("mismatch" in (a["error"] or "") for a in attempts), attempts
    assert impostor.peers == []


# -- secret rotation and v1a -------------------------------------------------------------------


async def test_rotation_each_verifier_with_one_secret_accepts(start_gateway: StartGateway,
                                                              receiver: Recorder) -> None:
    old, new = SECRET, "whsec_c2Vjb25kIHNlY3JldCBmb3Igcm90YXRpb24h"
    asym = generate_asymmetric_secret()
    doc = (endpoint_yaml("rot", receiver.url("/rot"), secret=False)
           .replace("  timeout:", "  secretRef: {name: rot-keys}\n  timeout:")
           + secret_yaml("rot-keys", {"secret": f"{new} {old} {asym}"})
           + subscription_yaml("all", "rot", '["*"]'))
    gw = await start_gateway(doc)
    await gw.send("order.created", {"n": 1})
    (got,) = await receiver.wait_for(lambda r: len(r) == 1)
    assert Webhook(old).verify(got.body, got.headers)["data"] == {"n": 1}
    assert Webhook(new).verify(got.body, got.headers)["data"] == {"n": 1}
    assert verify_asymmetric([public_key(asym)], got.headers, got.body, time.time()) \
        == got.webhook_id
    assert sorted(s.split(",")[0] for s in got.headers["webhook-signature"].split()) == [
        "v1", "v1", "v1a"]


# -- isolation ---------------------------------------------------------------------------------


@dataclass
class LatencyReceiver(LoopbackReceiver):
    """Records when each delivery arrived; /hang never answers, /fail answers 500."""

    arrivals: dict[str, list[float]] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.path == "/hang":
            await asyncio.Event().wait()
        if request.path == "/fail":
            return web.Response(status=500)
        sent = json.loads(body)["data"]["sent"]
        async with self.changed:
            self.arrivals.setdefault(request.path, []).append(time.time() - sent)
            self.changed.notify_all()
        return web.Response(status=204)

    async def wait_count(self, n: int, timeout: float = 60) -> None:
        await self.wait(lambda: sum(len(v) for v in self.arrivals.values()) >= n,
                        timeout=timeout, what=f"{n} deliveries",
                        state=lambda: {k: len(v) for k, v in self.arrivals.items()})


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


@pytest.mark.slow
async def test_a_hanging_and_a_failing_endpoint_do_not_slow_the_healthy_ones(
        start_gateway: StartGateway) -> None:
    events, healthy = 40, [f"h{i}" for i in range(8)]

    async def measure(rec: LatencyReceiver, bad: bool) -> tuple[float, Running]:
        manifests = "".join(endpoint_yaml(n, f"http://127.0.0.1:{rec.port}/{n}")
                            + subscription_yaml(n, n, '["*"]') for n in healthy)
        for n, path in (("hang", "hang"), ("fail", "fail")):
            url = f"http://127.0.0.1:{rec.port}/{path if bad else 'ok-' + n}"
            manifests += endpoint_yaml(n, url, timeout="3s", schedule="[0s, 50ms, 50ms, 50ms]",
                                       extra="  maxInFlight: 4\n")
            manifests += subscription_yaml(n, n, '["*"]')
        gw = await start_gateway(manifests, concurrency=64)
        for i in range(events):
            await gw.send("tick", {"i": i, "sent": time.time()})
            await asyncio.sleep(0.02)  # pacing the producer, not waiting on the gateway
        await rec.wait_count(events * (len(healthy) + (0 if bad else 2)))
        samples = [x for n in healthy for x in rec.arrivals[f"/{n}"]]
        return p99(samples), gw

    base_rec, mixed_rec = LatencyReceiver(), LatencyReceiver()
    await base_rec.start()
    await mixed_rec.start()
    try:
        baseline, first = await measure(base_rec, bad=False)
        await first.gateway.stop()  # the second run takes over the same queue
        mixed, second = await measure(mixed_rec, bad=True)
        postponed = second.gateway.dispatcher.postponements
    finally:
        for rec in (base_rec, mixed_rec):
            await rec.stop()
    print(f"\nhealthy p99 all-healthy {baseline * 1000:.0f} ms, with a hanging and a failing "
          f"endpoint {mixed * 1000:.0f} ms; saturation postponements of the hanging one "
          f"{postponed[('default/hang', 'saturated')]}")
    # Generous on a shared 2-core machine: 2x, or +1 s when the baseline is tiny. A healthy
    # delivery queued behind the hanging endpoint would wait out its 3 s timeout, so this
    # still fails on head-of-line blocking; the real figures are in docs/benchmarks.md.
    assert mixed <= max(2 * baseline, baseline + 1.0)
    # and cheap: the hanging endpoint's 36 waiting deliveries were not re-fetched in a loop
    assert postponed[("default/hang", "saturated")] < 2000


# -- rate limit ------------------------------------------------------------------------------


@dataclass
class ArrivalReceiver(LoopbackReceiver):
    times: list[float] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        async with self.changed:
            self.times.append(time.monotonic())
            self.changed.notify_all()
        return web.Response(status=204)

    async def wait_count(self, n: int, timeout: float) -> None:
        await self.wait(lambda: len(self.times) >= n, timeout=timeout, what=f"{n} deliveries",
                        state=lambda: f"{len(self.times)} arrived")

    def rate(self, burst: int) -> float:
        """Deliveries per second after the initial burst, over the whole run."""
        after = sorted(self.times)[burst - 1:]
        return (len(after) - 1) / (after[-1] - after[0])


@pytest.fixture
async def arrivals() -> AsyncIterator[ArrivalReceiver]:
    async with ArrivalReceiver() as rec:
        yield rec


LIMITED = "  rateLimit: {perSecond: 20, burst: 5}\n"


@pytest.mark.parametrize("burst", [1, 5])
async def test_rate_limit_in_one_process(start_gateway: StartGateway,
                                         arrivals: ArrivalReceiver, burst: int) -> None:
    gw = await start_gateway(
        endpoint_yaml("limited", f"http://127.0.0.1:{arrivals.port}/in",
                      extra=f"  rateLimit: {{perSecond: 20, burst: {burst}}}\n")
        + subscription_yaml("all", "limited", '["*"]'))
    ids = await asyncio.gather(*(gw.send("tick", {"i": i}) for i in range(60 + burst)))
    await arrivals.wait_count(60 + burst, timeout=30)
    rate = arrivals.rate(burst=burst)
    print(f"\nmeasured {rate:.2f}/s for a limit of 20/s, burst {burst}")
    # Never above the limit; the lower bound leaves room for a loaded 2-core machine, where
    # deliveries can only come back later than their slot, never earlier.
    assert 18 <= rate <= 20.5
    attempts = await gw.attempts(ids[-1], 1)
    assert [a["attempt"] for a in attempts] == [1]  # waiting counted no attempt


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize("partitions", [1, 3])
async def test_rate_limit_holds_across_two_deliverers_sharing_redis(
        tmp_path: Path, redis_url: str, arrivals: ArrivalReceiver, partitions: int) -> None:
    """Also with the queue in 3 partitions: the limit is gateway-wide, not per partition."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "m.yaml").write_text(
        queue_gateway_yaml(redis_url, partitions=partitions) +
        endpoint_yaml("limited", f"http://127.0.0.1:{arrivals.port}/in", extra=LIMITED)
        + subscription_yaml("all", "limited", '["*"]'))
    procs = [GatewayProcess(config, tmp_path / f"data{i}", tmp_path / f"gw{i}.log", *RUN_OPTIONS,
                            queue=redis_url) for i in range(2)]
    total = 125  # burst 5, then 20/s for 6 s
    async with aiohttp.ClientSession() as http:
        try:
            for p in procs:
                await p.start(http)

            async def send(i: int) -> None:
                url = procs[i % 2].url + "/v1/events"
                async with http.post(url, json={"type": "tick", "data": {"i": i}}) as resp:
                    assert resp.status == 202

            await asyncio.gather(*(send(i) for i in range(total)))
            await arrivals.wait_count(total, timeout=60)
            successes = [await p.successes(http) for p in procs]
        finally:
            for p in procs:
                p.kill()
    rate = arrivals.rate(burst=5)
    print(f"\nmeasured {rate:.2f}/s across two processes for a limit of 20/s "
          f"(deliveries per process: {successes})")
    assert 18 <= rate <= 22, rate
    assert all(n > 0 for n in successes), successes
