"""Inbound verification, one scheme at a time, against signatures made here by each
provider's documented algorithm (and published examples where there is one)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from hookgate.deliverer.intake.verify import (
    Rejected,
    verify_api_key,
    verify_basic,
    verify_github,
    verify_hmac,
    verify_request,
    verify_shopify,
    verify_standard_webhooks,
    verify_stripe,
)
from hookgate.model.routing import SourceConfig

NOW = 1_700_000_000


def reason(call: object) -> str:
    assert callable(call)
    with pytest.raises(Rejected) as info:
        call()
    return info.value.reason


# -- GitHub ------------------------------------------------------------------------------

# docs.github.com, "Validating webhook deliveries": the example secret and payload
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_github_documented_example_verifies() -> None:
    headers = {"X-Hub-Signature-256": GITHUB_SIGNATURE, "X-GitHub-Delivery": "guid-1"}
    assert verify_github(GITHUB_SECRET, headers, GITHUB_BODY) == "guid-1"
    # header names are case-insensitive, hex case does not matter, no delivery id is fine
    upper = "sha256=" + GITHUB_SIGNATURE.removeprefix("sha256=").upper()
    assert verify_github(GITHUB_SECRET, {"x-hub-signature-256": upper}, GITHUB_BODY) is None


@pytest.mark.parametrize(("headers", "body", "secret", "expected"), [
    ({}, GITHUB_BODY, GITHUB_SECRET, "missing_signature"),
    ({"X-Hub-Signature": "sha1=abc"}, GITHUB_BODY, GITHUB_SECRET, "missing_signature"),
    ({"X-Hub-Signature-256": GITHUB_SIGNATURE[7:]}, GITHUB_BODY, GITHUB_SECRET,
     "malformed_signature"),
    ({"X-Hub-Signature-256": GITHUB_SIGNATURE}, b"Hello, World?", GITHUB_SECRET,
     "bad_signature"),
    ({"X-Hub-Signature-256": GITHUB_SIGNATURE}, GITHUB_BODY, "It's a secret to everybody",
     "bad_signature"),
    ({"X-Hub-Signature-256": "sha256=zz\udcff"}, GITHUB_BODY, GITHUB_SECRET, "bad_signature"),
])
def test_github_refusals(headers: dict[str, str], body: bytes, secret: str,
                         expected: str) -> None:
    assert reason(lambda: verify_github(secret, headers, body)) == expected


# -- Stripe ------------------------------------------------------------------------------

STRIPE_SECRET = "whsec_test_5ecret"


def stripe_header(body: bytes, t: int, secret: str = STRIPE_SECRET, extra: str = "") -> str:
    # stripe.com/docs/webhooks#verify-manually: HMAC-SHA256 of "{t}.{payload}", hex, keyed
    # with the endpoint secret as it is
    signature = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={signature}{extra}"


def test_stripe_verifies_and_returns_the_event_id() -> None:
    body = json.dumps({"id": "evt_1", "type": "invoice.paid"}).encode()
    headers = {"Stripe-Signature": stripe_header(body, NOW)}
    assert verify_stripe(STRIPE_SECRET, headers, body, NOW) == "evt_1"


def test_stripe_any_v1_may_match_and_v0_is_ignored() -> None:
    body = b'{"id": "evt_2"}'
    good = stripe_header(body, NOW).split(",v1=")[1]
    header = f"t={NOW},v1={'0' * 64},v0={good},v1={good}"
    assert verify_stripe(STRIPE_SECRET, {"Stripe-Signature": header}, body, NOW) == "evt_2"
    only_v0 = f"t={NOW},v0={good}"
    assert reason(lambda: verify_stripe(STRIPE_SECRET, {"Stripe-Signature": only_v0}, body,
                                        NOW)) == "malformed_signature"


@pytest.mark.parametrize(("header", "now", "expected"), [
    (None, NOW, "missing_signature"),
    ("v1=abc", NOW, "malformed_signature"),
    (f"t=soon,v1={'0' * 64}", NOW, "malformed_signature"),
    (f"t={NOW},v1={'0' * 64}", NOW, "bad_signature"),
    ("signed-at-301", NOW + 301, "stale_timestamp"),
    ("signed-at-300", NOW + 300, None),
    ("signed-at-300", NOW - 300, None),  # clocks differ both ways
    ("signed-at-301", NOW - 301, "stale_timestamp"),
])
def test_stripe_refusals_and_tolerance(header: str | None, now: int,
                                       expected: str | None) -> None:
    body = b'{"id": "evt_3"}'
    if header and header.startswith("signed-at-"):
        header = stripe_header(body, NOW)
    headers = {"Stripe-Signature": header} if header else {}
    if expected is None:
        assert verify_stripe(STRIPE_SECRET, headers, body, now) == "evt_3"
    else:
        assert reason(lambda: verify_stripe(STRIPE_SECRET, headers, body, now)) == expected


def test_stripe_a_forged_old_request_is_bad_not_stale() -> None:
    body = b'{"id": "evt_4"}'
    header = stripe_header(body, NOW - 3600, secret="whsec_other")
    assert reason(lambda: verify_stripe(STRIPE_SECRET, {"Stripe-Signature": header}, body,
                                        NOW)) == "bad_signature"


# -- Shopify -----------------------------------------------------------------------------

def test_shopify() -> None:
    body = b'{"id": 820982911946154508}'
    # shopify.dev, "Verify a webhook": base64 of HMAC-SHA256 of the raw body
    digest = base64.b64encode(hmac.new(b"shpss_x", body, hashlib.sha256).digest()).decode()
    headers = {"X-Shopify-Hmac-Sha256": digest, "X-Shopify-Webhook-Id": "b54557e4"}
    assert verify_shopify("shpss_x", headers, body) == "b54557e4"
    assert reason(lambda: verify_shopify("shpss_y", headers, body)) == "bad_signature"
    assert reason(lambda: verify_shopify("shpss_x", headers, body + b" ")) == "bad_signature"
    assert reason(lambda: verify_shopify("shpss_x", {}, body)) == "missing_signature"


# -- Standard Webhooks -------------------------------------------------------------------

# The Standard Webhooks / Svix documented example
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID, SW_TIME, SW_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def sw_headers(signature: str = SW_SIGNATURE, msg_id: str = SW_ID,
               t: int = SW_TIME) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(t), "webhook-signature": signature}


def test_standard_webhooks_documented_example() -> None:
    assert verify_standard_webhooks(SW_SECRET, sw_headers(), SW_BODY, SW_TIME) == SW_ID
    # and what the official library signs verifies too
    signed = Webhook(SW_SECRET).sign("msg_2", datetime.fromtimestamp(NOW, UTC), "{}")
    assert verify_standard_webhooks(SW_SECRET, sw_headers(signed, "msg_2", NOW), b"{}",
                                    NOW) == "msg_2"


def test_standard_webhooks_rotation_on_both_sides() -> None:
    other = "whsec_" + base64.b64encode(b"k" * 32).decode()
    several = f"v1,{base64.b64encode(b'x' * 32).decode()} {SW_SIGNATURE}"
    assert verify_standard_webhooks(SW_SECRET, sw_headers(several), SW_BODY, SW_TIME) == SW_ID
    assert verify_standard_webhooks(f"{other} {SW_SECRET}", sw_headers(), SW_BODY,
                                    SW_TIME) == SW_ID
    assert reason(lambda: verify_standard_webhooks(other, sw_headers(), SW_BODY,
                                                   SW_TIME)) == "bad_signature"


@pytest.mark.parametrize(("headers", "now", "expected"), [
    ({"webhook-id": SW_ID, "webhook-timestamp": str(SW_TIME)}, SW_TIME, "missing_signature"),
    (sw_headers(t=0) | {"webhook-timestamp": "yesterday"}, SW_TIME, "malformed_signature"),
    (sw_headers(msg_id="msg_other"), SW_TIME, "bad_signature"),  # the id is signed too
    (sw_headers(), SW_TIME + 301, "stale_timestamp"),
    (sw_headers(), SW_TIME - 301, "stale_timestamp"),
])
def test_standard_webhooks_refusals(headers: dict[str, str], now: int, expected: str) -> None:
    assert reason(lambda: verify_standard_webhooks(SW_SECRET, headers, SW_BODY, now)) == expected


# -- generic HMAC, basic, API key -------------------------------------------------------

@pytest.mark.parametrize(("algorithm", "encoding", "prefix"), [
    ("sha256", "hex", ""), ("sha256", "hex", "sha256="), ("sha512", "base64", ""),
    ("sha512", "hex", "sha512="), ("sha256", "base64", "v1="),
])
def test_hmac_variants(algorithm: str, encoding: str, prefix: str) -> None:
    body = b'{"type": "x"}'
    digest = hmac.new(b"k3y", body, getattr(hashlib, algorithm)).digest()
    text = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    options = {"header": "X-Sig", "algorithm": algorithm, "encoding": encoding,
               "prefix": prefix}
    verify_hmac("k3y", {"x-sig": prefix + text}, body, **options)
    assert reason(lambda: verify_hmac("k3y", {"X-Sig": prefix + text}, body + b"\n",
                                      **options)) == "bad_signature"
    assert reason(lambda: verify_hmac("k3y", {}, body, **options)) == "missing_signature"
    if prefix:
        assert reason(lambda: verify_hmac("k3y", {"X-Sig": text}, body, **options)
                      ) == "malformed_signature"


def test_basic() -> None:
    def auth(text: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(text.encode()).decode()}

    verify_basic("acme", "pa:ss", auth("acme:pa:ss"))  # the password may hold a colon
    verify_basic("acme", "pa:ss", {"authorization": auth("acme:pa:ss")["Authorization"]
                                   .replace("Basic", "basic")})
    assert reason(lambda: verify_basic("acme", "pa:ss", auth("acme:pass"))) == "bad_credentials"
    assert reason(lambda: verify_basic("acme", "pa:ss", auth("acm:pa:ss"))) == "bad_credentials"
    assert reason(lambda: verify_basic("acme", "", auth("acme"))) == "bad_credentials"
    assert reason(lambda: verify_basic("acme", "pa:ss", {"Authorization": "Basic !!"})
                  ) == "bad_credentials"
    assert reason(lambda: verify_basic("acme", "pa:ss", {"Authorization": "Bearer x"})
                  ) == "missing_credentials"
    assert reason(lambda: verify_basic("acme", "pa:ss", {})) == "missing_credentials"


def test_api_key() -> None:
    verify_api_key("k-1", {"x-api-key": "k-1"})
    verify_api_key("k-old k-new", {"X-Api-Key": "k-new"})  # several keys: rotation
    verify_api_key("k-1", {"Authorization": "Bearer k-1"}, header="Authorization")
    assert reason(lambda: verify_api_key("k-1", {"X-Api-Key": "k-2"})) == "bad_credentials"
    assert reason(lambda: verify_api_key("k-1", {"X-Api-Key": "k-1 k-2"})) == "bad_credentials"
    assert reason(lambda: verify_api_key("k-1", {})) == "missing_credentials"
    assert reason(lambda: verify_api_key("k-1", {"Authorization": "Bearer "},
                                         header="Authorization")) == "missing_credentials"


def test_dispatcher_picks_the_scheme_and_its_settings() -> None:
    github = SourceConfig(key="ns/gh", path="/in/ns/gh", scheme="github")
    headers = {"X-Hub-Signature-256": GITHUB_SIGNATURE, "X-GitHub-Delivery": "g"}
    assert verify_request(github, {"secret": GITHUB_SECRET}, headers, GITHUB_BODY, NOW) == "g"
    # an empty secret never verifies anything, even a request "signed" with it
    empty_signed = {"X-Hub-Signature-256": "sha256=" + hmac.new(
        b"", GITHUB_BODY, hashlib.sha256).hexdigest()}
    assert reason(lambda: verify_request(github, {}, empty_signed, GITHUB_BODY, NOW)
                  ) == "bad_signature"
    stripe = SourceConfig(key="ns/s", path="/s", scheme="stripe", tolerance=10)
    body = b'{"id": "evt_9"}'
    late = {"Stripe-Signature": stripe_header(body, NOW - 11)}
    assert reason(lambda: verify_request(stripe, {"secret": STRIPE_SECRET}, late, body, NOW)
                  ) == "stale_timestamp"
    basic = SourceConfig(key="ns/b", path="/b", scheme="basic")
    creds = {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    assert verify_request(basic, {"username": "u", "password": "p"}, creds, b"", NOW) is None
    api = SourceConfig(key="ns/a", path="/a", scheme="api-key", header="X-Key")
    assert verify_request(api, {"secret": "k"}, {"X-Key": "k"}, b"", NOW) is None
