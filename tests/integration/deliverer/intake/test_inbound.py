"""Inbound webhooks end to end: a third party posts to a WebhookSource path, the gateway
verifies it, and a Subscription with sourceRef routes it to an internal service.

Requests are signed here, by the providers' documented algorithms written out in this file,
never by Hookgate's own code; deliveries to the internal service are checked with the
official standardwebhooks library like every outbound delivery. Runs on both queues.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook

from tests.support.gateway import Running, StartGateway
from tests.support.manifests import SECRET, endpoint_yaml, subscription_yaml
from tests.support.receiver import Recorder
from tests.support.waiting import wait_for

UNAUTHORIZED = {"error": {"code": "unauthorized", "message": "signature verification failed"}}
SHARED = "It's a Secret to Everybody"  # GitHub's documented example secret
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks / Svix example


# -- signing, by each provider's documentation -------------------------------------------

def github_headers(secret: str, body: bytes, delivery: str, event: str = "push"
                   ) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery, "Content-Type": "application/json"}


def stripe_headers(secret: str, body: bytes, t: int) -> dict[str, str]:
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={digest}", "Content-Type": "application/json"}


def shopify_headers(secret: str, body: bytes, delivery: str) -> dict[str, str]:
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return {"X-Shopify-Hmac-Sha256": digest.decode(), "X-Shopify-Topic": "orders/create",
            "X-Shopify-Webhook-Id": delivery, "Content-Type": "application/json"}


def standard_headers(secret: str, body: bytes, msg_id: str, t: int) -> dict[str, str]:
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(t, UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(t), "webhook-signature": signature,
            "Content-Type": "application/json"}


def hmac512_headers(secret: str, body: bytes) -> dict[str, str]:
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha512).digest())
    return {"X-Signature": "sha512=" + digest.decode(), "Content-Type": "application/json"}


def basic_headers(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


# -- manifests ---------------------------------------------------------------------------

def source_yaml(name: str, verify: str, *, secret: dict[str, str], extra: str = "") -> str:
    data = ", ".join(f"{k}: {json.dumps(v)}" for k, v in secret.items())
    return (f"apiVersion: hookgate.io/v1alpha1\nkind: WebhookSource\nmetadata: {{name: {name}}}\n"
            f"spec:\n  verify: {verify}\n{extra}---\n"
            f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-secret}}\n"
            f"stringData: {{{data}}}\n---\n")


def routed_yaml(name: str, endpoint: str, source: str, types: str = '["*"]') -> str:
    return (f"apiVersion: hookgate.io/v1alpha1\nkind: Subscription\nmetadata: {{name: {name}}}\n"
            f"spec:\n  endpointRef: {{name: {endpoint}}}\n  sourceRef: {{name: {source}}}\n"
            f"  eventTypes: {types}\n---\n")


def internal_service(receiver: Recorder, source: str = "src") -> str:
    """An internal endpoint and a subscription giving it every event of ``source``."""
    return (endpoint_yaml("internal", receiver.url("/internal"))
            + routed_yaml("from-source", "internal", source))


# -- one table of schemes ----------------------------------------------------------------

Sign = Callable[[bytes, str, int], dict[str, str]]  # (body, delivery id, unix time)


@dataclass(frozen=True)
class Scheme:
    name: str
    verify: str  # the spec.verify mapping, YAML flow style
    secret: dict[str, str]  # stringData of the source's Secret
    sign: Sign  # headers of a genuine request
    forge: Sign  # headers signed with the wrong secret
    drop: str  # the header whose absence is refused
    missing_reason: str  # the metric reason for a request without it
    bad_reason: str  # ... and for the wrong secret
    event_type: str  # the type the request below becomes
    dedup: bool  # the scheme carries a delivery id
    extra: str = ""  # more of the source's spec


def _payload(kind: str, event_id: str) -> bytes:
    return json.dumps({"id": event_id, "type": kind, "object": {"amount": 120}}).encode()


SCHEMES = [
    Scheme("github", "{scheme: github, secretRef: {name: src-secret}}", {"secret": SHARED},
           lambda b, d, t: github_headers(SHARED, b, d),
           lambda b, d, t: github_headers("not it", b, d),
           "X-Hub-Signature-256", "missing_signature", "bad_signature", "github.push", True,
           '  eventType: {header: X-GitHub-Event, prefix: "github."}\n'),
    Scheme("stripe", "{scheme: stripe, secretRef: {name: src-secret}}",
           {"secret": "whsec_stripe_test_secret"},
           lambda b, d, t: stripe_headers("whsec_stripe_test_secret", b, t),
           lambda b, d, t: stripe_headers("whsec_someone_else", b, t),
           "Stripe-Signature", "missing_signature", "bad_signature", "invoice.paid", True),
    Scheme("shopify", "{scheme: shopify, secretRef: {name: src-secret, key: hmac}}",
           {"hmac": "shpss_test"},
           lambda b, d, t: shopify_headers("shpss_test", b, d),
           lambda b, d, t: shopify_headers("shpss_other", b, d),
           "X-Shopify-Hmac-Sha256", "missing_signature", "bad_signature",
           "shopify.orders/create", True, '  eventType: {prefix: "shopify."}\n'),
    Scheme("standard-webhooks", "{scheme: standard-webhooks, secretRef: {name: src-secret}}",
           {"secret": WHSEC},
           lambda b, d, t: standard_headers(WHSEC, b, d, t),
           lambda b, d, t: standard_headers("whsec_" + base64.b64encode(b"x" * 24).decode(),
                                            b, d, t),
           "webhook-signature", "missing_signature", "bad_signature", "invoice.paid", True),
    Scheme("hmac", "{scheme: hmac, secretRef: {name: src-secret}, header: X-Signature, "
           "algorithm: sha512, encoding: base64, prefix: sha512=}", {"secret": "s3cr3t"},
           lambda b, d, t: hmac512_headers("s3cr3t", b),
           lambda b, d, t: hmac512_headers("guess", b),
           "X-Signature", "missing_signature", "bad_signature", "invoice.paid", False),
    Scheme("basic", "{scheme: basic, secretRef: {name: src-secret}}",
           {"username": "acme", "password": "pa:ss word"},
           lambda b, d, t: basic_headers("acme", "pa:ss word"),
           lambda b, d, t: basic_headers("acme", "guess"),
           "Authorization", "missing_credentials", "bad_credentials", "invoice.paid", False),
    Scheme("api-key", "{scheme: api-key, secretRef: {name: src-secret}, header: X-Partner-Key}",
           {"secret": "k-123"},
           lambda b, d, t: {"X-Partner-Key": "k-123", "Content-Type": "application/json"},
           lambda b, d, t: {"X-Partner-Key": "k-456", "Content-Type": "application/json"},
           "X-Partner-Key", "missing_credentials", "bad_credentials", "invoice.paid", False),
]
BY_NAME = {s.name: s for s in SCHEMES}


def _body_for(scheme: Scheme, event_id: str) -> bytes:
    return _payload("push" if scheme.name == "github" else "invoice.paid", event_id)


async def _start(start_gateway: StartGateway, receiver: Recorder, scheme: Scheme,
                 more: str = "") -> Running:
    return await start_gateway(
        source_yaml("src", scheme.verify, secret=scheme.secret, extra=scheme.extra)
        + internal_service(receiver) + more)


async def _status(gw: Running, path: str, body: bytes, headers: dict[str, str]) -> int:
    """The status of a POST, whatever the body (aiohttp's own 404 is text)."""
    async with gw.http.post(gw.url + path, data=body, headers=headers) as resp:
        await resp.read()
        return resp.status


def _rejected(gw: Running, reason: str, source: str = "default/src") -> float:
    value = gw.gateway.metrics.registry.get_sample_value(
        "hookgate_inbound_rejected_total",
        {"gateway": gw.gateway.metrics.gateway, "source": source, "reason": reason})
    return value or 0.0


def _accepted(gw: Running, source: str = "default/src") -> float:
    value = gw.gateway.metrics.registry.get_sample_value(
        "hookgate_inbound_accepted_total",
        {"gateway": gw.gateway.metrics.gateway, "source": source})
    return value or 0.0


# -- tests -------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.name)
async def test_a_verified_request_is_routed_to_the_internal_service(
        start_gateway: StartGateway, receiver: Recorder, scheme: Scheme) -> None:
    gw = await _start(start_gateway, receiver, scheme)
    body = _body_for(scheme, "evt_provider_1")
    status, doc = await gw.post("/in/default/src", raw=body,
                                headers=scheme.sign(body, "d-1", int(time.time())))
    assert status == 202, doc
    assert doc["deliveries"] == 1
    (got,) = await receiver.wait_for(lambda r: len(r) == 1)
    assert got.path == "/internal"
    assert got.webhook_id == doc["id"]
    delivered = Webhook(SECRET).verify(got.body, got.headers)  # signed by us, as usual
    assert delivered["type"] == scheme.event_type
    assert delivered["data"] == json.loads(body)
    assert _accepted(gw) == 1
    status, record = await gw.get(f"/v1/events/{doc['id']}")
    assert status == 200 and record["source"] == "default/src"


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.name)
async def test_forged_requests_get_one_generic_401_and_are_counted(
        start_gateway: StartGateway, receiver: Recorder, scheme: Scheme) -> None:
    gw = await _start(start_gateway, receiver, scheme)
    now = int(time.time())
    body = _body_for(scheme, "evt_provider_2")
    genuine = scheme.sign(body, "d-2", now)
    tampered = body.replace(b"120", b"999")
    missing = {k: v for k, v in genuine.items() if k.lower() != scheme.drop.lower()}
    attempts = [
        (body, scheme.forge(body, "d-2", now)),  # signed with another secret
        (body, missing),  # no signature at all
    ]
    signs_body = scheme.name not in ("basic", "api-key")  # those carry no body signature
    if signs_body:
        attempts.append((tampered, genuine))  # the body changed after signing
    for raw, headers in attempts:
        status, doc = await gw.post("/in/default/src", raw=raw, headers=headers)
        assert (status, doc) == (401, UNAUTHORIZED)
    assert _rejected(gw, scheme.bad_reason) == (2 if signs_body else 1)
    assert _rejected(gw, scheme.missing_reason) == 1
    # Nothing was enqueued: the one genuine request is the only delivery.
    status, doc = await gw.post("/in/default/src", raw=body, headers=genuine)
    assert status == 202
    await receiver.wait_for(lambda r: len(r) >= 1)
    assert [r.webhook_id for r in receiver.received] == [doc["id"]]


@pytest.mark.parametrize("name", ["stripe", "standard-webhooks"])
async def test_stale_timestamps_are_refused(start_gateway: StartGateway, receiver: Recorder,
                                            name: str) -> None:
    scheme = BY_NAME[name]
    gw = await _start(start_gateway, receiver, scheme)
    body = _body_for(scheme, "evt_old")
    for skew in (-301 - 60, 301 + 60):  # the default tolerance is 5 minutes, both ways
        headers = scheme.sign(body, f"d-{skew}", int(time.time()) + skew)
        status, doc = await gw.post("/in/default/src", raw=body, headers=headers)
        assert (status, doc) == (401, UNAUTHORIZED)
    assert _rejected(gw, "stale_timestamp") == 2
    assert _accepted(gw) == 0


async def test_a_configured_tolerance_applies(start_gateway: StartGateway,
                                              receiver: Recorder) -> None:
    scheme = BY_NAME["stripe"]
    verify = scheme.verify.replace("}}", "}, tolerance: 10s}")
    gw = await start_gateway(source_yaml("src", verify, secret=scheme.secret)
                             + internal_service(receiver))
    body = _body_for(scheme, "evt_tolerance")
    status, _ = await gw.post("/in/default/src", raw=body,
                              headers=scheme.sign(body, "", int(time.time()) - 120))
    assert status == 401
    assert _rejected(gw, "stale_timestamp") == 1


@pytest.mark.parametrize("name", [s.name for s in SCHEMES if s.dedup])
async def test_a_replayed_delivery_is_accepted_but_delivered_once(
        start_gateway: StartGateway, receiver: Recorder, name: str) -> None:
    scheme = BY_NAME[name]
    gw = await _start(start_gateway, receiver, scheme)
    body = _body_for(scheme, "evt_provider_dup")
    headers = scheme.sign(body, "delivery-dup", int(time.time()))
    first = await gw.post("/in/default/src", raw=body, headers=headers)
    again = await gw.post("/in/default/src", raw=body, headers=headers)
    assert first[0] == again[0] == 202
    assert again[1] == {"id": first[1]["id"], "duplicate": True}
    # Another delivery (new id) is a new event: wait for both, then count.
    other = _body_for(scheme, "evt_provider_other")
    status, doc = await gw.post("/in/default/src", raw=other,
                                headers=scheme.sign(other, "delivery-other", int(time.time())))
    assert status == 202 and doc["id"] != first[1]["id"]
    await receiver.wait_for(lambda r: {first[1]["id"], doc["id"]} <= {x.webhook_id for x in r})
    assert sorted(r.webhook_id for r in receiver.received) == sorted([first[1]["id"], doc["id"]])
    assert _accepted(gw) == 3


async def test_delivery_ids_are_scoped_by_source(start_gateway: StartGateway,
                                                 receiver: Recorder) -> None:
    github = BY_NAME["github"]
    gw = await start_gateway(
        source_yaml("src", github.verify, secret=github.secret, extra=github.extra)
        + source_yaml("other", github.verify.replace("src-secret", "other-secret"),
                      secret=github.secret)
        + internal_service(receiver) + routed_yaml("from-other", "internal", "other"))
    body = _body_for(github, "evt_same")
    headers = github.sign(body, "same-guid", int(time.time()))
    a = await gw.post("/in/default/src", raw=body, headers=headers)
    b = await gw.post("/in/default/other", raw=body, headers=headers)
    assert a[0] == b[0] == 202 and "duplicate" not in b[1]
    # ... and an ingest API key of the same text is not a duplicate either
    c = await gw.post("/v1/events", {"type": "x", "data": {}, "idempotencyKey": "same-guid"})
    assert c[0] == 202 and "duplicate" not in c[1]
    await receiver.wait_for(lambda r: len(r) == 2)


async def test_github_form_encoded_payloads_are_verified_raw_and_decoded(
        start_gateway: StartGateway, receiver: Recorder) -> None:
    scheme = BY_NAME["github"]
    gw = await _start(start_gateway, receiver, scheme)
    payload = {"ref": "refs/heads/main", "commits": [{"message": "a+b & c=d ü"}]}
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    headers = {**github_headers(SHARED, body, "form-1"),
               "Content-Type": "application/x-www-form-urlencoded"}
    status, doc = await gw.post("/in/default/src", raw=body, headers=headers)
    assert status == 202, doc
    (got,) = await receiver.wait_for(lambda r: len(r) == 1)
    delivered = json.loads(got.body)
    assert (delivered["type"], delivered["data"]) == ("github.push", payload)
    # Re-encoding the same form differently breaks the signature: bytes are what count.
    recoded = urllib.parse.urlencode({"payload": json.dumps(payload)},
                                     quote_via=urllib.parse.quote).encode()
    assert recoded != body
    status, _ = await gw.post("/in/default/src", raw=recoded, headers=headers)
    assert status == 401


async def test_event_type_from_a_nested_field_with_a_prefix(start_gateway: StartGateway,
                                                            receiver: Recorder) -> None:
    scheme = BY_NAME["api-key"]
    gw = await start_gateway(
        source_yaml("src", scheme.verify, secret=scheme.secret,
                    extra='  eventType: {field: data.kind, prefix: "partner."}\n')
        + endpoint_yaml("internal", receiver.url("/internal"))
        + routed_yaml("only-shipped", "internal", "src", '["partner.shipment.*"]'))
    headers = scheme.sign(b"", "", 0)
    for kind in ("shipment.sent", "invoice.sent"):
        body = json.dumps({"data": {"kind": kind}}).encode()
        status, doc = await gw.post("/in/default/src", raw=body, headers=headers)
        assert status == 202, doc
    (got,) = await receiver.wait_for(lambda r: len(r) == 1)
    assert json.loads(got.body)["type"] == "partner.shipment.sent"
    status, doc = await gw.post("/in/default/src", raw=b'{"data": {}}', headers=headers)
    assert status == 400 and "data.kind" in doc["error"]["message"]


async def test_source_restricted_subscriptions_see_only_their_source(
        start_gateway: StartGateway, receiver: Recorder) -> None:
    scheme = BY_NAME["api-key"]
    gw = await start_gateway(
        source_yaml("src", scheme.verify, secret=scheme.secret)
        + internal_service(receiver)
        + endpoint_yaml("public", receiver.url("/public"))
        + subscription_yaml("public-all", "public", '["*"]'))
    await gw.send("invoice.paid")  # from the ingest API: not the source's
    body = _body_for(scheme, "evt_src")
    status, _ = await gw.post("/in/default/src", raw=body, headers=scheme.sign(body, "", 0))
    assert status == 202
    await receiver.wait_for(lambda r: len(r) == 3)
    assert sorted(r.path for r in receiver.received) == ["/internal", "/public", "/public"]


async def test_sources_follow_config_changes_without_restart(start_gateway: StartGateway,
                                                            receiver: Recorder) -> None:
    scheme = BY_NAME["api-key"]
    base = internal_service(receiver)
    gw = await start_gateway(base)
    body = _body_for(scheme, "evt_live")
    headers = scheme.sign(body, "", 0)
    status = await _status(gw, "/in/default/src", body, headers)
    assert status == 404

    async def change(manifests: str) -> None:
        applied = asyncio.Event()
        gw.gateway.live.subscribe(lambda _snapshot: applied.set())
        (gw.files.config_dir / "manifests.yaml").write_text(manifests)
        await asyncio.wait_for(applied.wait(), 10)

    await change(base + source_yaml("src", scheme.verify, secret=scheme.secret))
    status = await _status(gw, "/in/default/src", body, headers)
    assert status == 202
    # a rotated key applies at once, and the old one stops working
    await change(base + source_yaml("src", scheme.verify, secret={"secret": "k-new"}))
    status = await _status(gw, "/in/default/src", body, headers)
    assert status == 401
    status = await _status(gw, "/in/default/src", body, {**headers, "X-Partner-Key": "k-new"})
    assert status == 202
    await change(base)
    status = await _status(gw, "/in/default/src", body, headers)
    assert status == 404
    await receiver.wait_for(lambda r: len(r) == 2)


async def test_ingest_api_keys_do_not_apply_to_source_paths(start_gateway: StartGateway,
                                                            receiver: Recorder) -> None:
    keys = ("apiVersion: hookgate.io/v1alpha1\nkind: WebhookGateway\nmetadata: {name: default}\n"
            "spec:\n  ingest: {apiKeysFrom: {secretRef: {name: ingest-keys}}}\n---\n"
            "apiVersion: v1\nkind: Secret\nmetadata: {name: ingest-keys}\n"
            "stringData: {ci: key-one}\n---\n")
    scheme = BY_NAME["github"]
    gw = await _start(start_gateway, receiver, scheme, keys)
    body = _body_for(scheme, "evt_keys")
    status = await _status(gw, "/in/default/src", body, scheme.sign(body, "k-1", int(time.time())))
    assert status == 202
    status, doc = await gw.post("/v1/events", {"type": "x", "data": {}})
    assert (status, doc["error"]["code"]) == (401, "missing_api_key")


async def test_a_custom_path_other_methods_and_unknown_paths(start_gateway: StartGateway,
                                                             receiver: Recorder) -> None:
    scheme = BY_NAME["api-key"]
    gw = await start_gateway(source_yaml("src", scheme.verify, secret=scheme.secret,
                                         extra="  path: /hooks/partner\n")
                             + internal_service(receiver))
    body = _body_for(scheme, "evt_path")
    status = await _status(gw, "/hooks/partner", body, scheme.sign(body, "", 0))
    assert status == 202
    status = await _status(gw, "/in/default/src", body, scheme.sign(body, "", 0))
    assert status == 404
    status, doc = await gw.get("/hooks/partner")
    assert status == 405 and doc["error"]["code"] == "method_not_allowed"
    status, _ = await gw.get("/healthz")
    assert status == 200


async def test_an_oversize_body_is_refused_before_verification(
        start_gateway: StartGateway, receiver: Recorder) -> None:
    scheme = BY_NAME["github"]
    gw = await _start(start_gateway, receiver, scheme)
    body = b'{"x": "' + b"a" * 300_000 + b'"}'
    status, doc = await gw.post("/in/default/src", raw=body,
                                headers=scheme.sign(body, "big", int(time.time())))
    assert status == 413 and doc["error"]["code"] == "body_too_large"
    assert _rejected(gw, "too_large") == 1


async def test_metrics_name_the_source_and_the_reason(start_gateway: StartGateway,
                                                      receiver: Recorder) -> None:
    scheme = BY_NAME["github"]
    gw = await _start(start_gateway, receiver, scheme)
    body = _body_for(scheme, "evt_metrics")
    await gw.post("/in/default/src", raw=body, headers={"Content-Type": "application/json"})
    status, _ = await gw.post("/in/default/src", raw=body,
                              headers=scheme.sign(body, "m-1", int(time.time())))
    assert status == 202
    status, text = await gw.get("/metrics")
    assert status == 200
    gateway = gw.gateway.metrics.gateway
    samples = {(m.name, tuple(sorted(m.labels.items()))): m.value
               for family in text_string_to_metric_families(text) for m in family.samples}
    source = ("source", "default/src")
    assert samples[("hookgate_inbound_rejected_total",
                    (("gateway", gateway), ("reason", "missing_signature"), source))] == 1
    assert samples[("hookgate_inbound_accepted_total", (("gateway", gateway), source))] == 1
    assert samples[("hookgate_events_ingested_total", (("gateway", gateway), source))] == 1


async def test_kept_headers_travel_with_the_event_even_through_a_replay(
        start_gateway: StartGateway, receiver: Recorder) -> None:
    broken = True
    receiver.script["/internal"] = lambda n: 500 if broken else 204
    scheme = BY_NAME["github"]
    keep = "  keepHeaders: [X-GitHub-Delivery, X-GitHub-Hook-ID, X-Team, X-Absent]\n"
    gw = await start_gateway(
        source_yaml("src", scheme.verify, secret=scheme.secret, extra=scheme.extra + keep)
        + endpoint_yaml("internal", receiver.url("/internal"), schedule="[0s]",
                        extra="  headers: {X-Team: platform}\n")
        + routed_yaml("from-source", "internal", "src"))
    body = _body_for(scheme, "evt_keep")
    headers = {**scheme.sign(body, "d-keep", int(time.time())), "X-GitHub-Hook-ID": "42",
               "X-Team": "not-the-endpoint's"}
    status, doc = await gw.post("/in/default/src", raw=body, headers=headers)
    assert status == 202
    await receiver.wait_for(lambda r: len(r) == 1)

    async def dead_letters() -> list[dict[str, Any]]:
        _, listed = await gw.get("/v1/dead-letters")
        return list(listed["items"])

    await wait_for(dead_letters, what="the dead letter")
    broken = False
    status, replayed = await gw.post("/v1/dead-letters/replay", {"all": True})
    assert (status, replayed) == (200, {"requeued": 1})
    got = await receiver.wait_for(lambda r: any(x.status == 204 for x in r))
    for delivery in got:
        assert delivery.webhook_id == doc["id"]
        assert delivery.headers["x-github-delivery"] == "d-keep"
        assert delivery.headers["x-github-hook-id"] == "42"
        assert delivery.headers["x-team"] == "platform"  # the endpoint's own header wins
        assert "x-absent" not in delivery.headers
        Webhook(SECRET).verify(delivery.body, delivery.headers)


async def test_subscription_filters_apply_to_inbound_events(start_gateway: StartGateway,
                                                            receiver: Recorder) -> None:
    scheme = BY_NAME["api-key"]
    gw = await start_gateway(
        source_yaml("src", scheme.verify, secret=scheme.secret)
        + endpoint_yaml("internal", receiver.url("/internal"))
        + routed_yaml("big", "internal", "src").replace(
            "  eventTypes:", '  filter: data.amount > 100 && source == "default/src"\n'
                             "  eventTypes:"))
    for amount in (50, 150):
        body = json.dumps({"type": "invoice.paid", "amount": amount}).encode()
        status, doc = await gw.post("/in/default/src", raw=body, headers=scheme.sign(body, "", 0))
        assert (status, doc["deliveries"]) == (202, 1 if amount > 100 else 0)
    (got,) = await receiver.wait_for(lambda r: len(r) == 1)
    assert json.loads(got.body)["data"]["amount"] == 150


async def test_a_large_body_sent_in_chunks_is_verified_whole(start_gateway: StartGateway,
                                                             receiver: Recorder) -> None:
    scheme = BY_NAME["github"]
    gw = await _start(start_gateway, receiver, scheme)
    payload = {"commits": [{"message": "x" * 1000, "n": i} for i in range(200)]}
    body = json.dumps(payload).encode()  # about 200 KB, under the 256 KiB limit

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 16 * 1024):
            yield body[start:start + 16 * 1024]
            await asyncio.sleep(0)  # let each piece go out on its own

    headers = scheme.sign(body, "big-chunked", int(time.time()))
    async with gw.http.post(gw.url + "/in/default/src", data=pieces(), headers=headers) as resp:
        assert resp.status == 202, await resp.text()
    (got,) = await receiver.wait_for(lambda r: len(r) == 1)
    assert json.loads(got.body)["data"] == payload
