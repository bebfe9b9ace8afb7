"""Verification of inbound webhook requests: one pure function per scheme, and a dispatcher.

Every function takes the shared secret, the request headers (looked up case-insensitively),
the raw body exactly as received and, for schemes that sign a timestamp, the current time.
It returns the provider's delivery id (``None`` when the scheme carries none) or raises
:class:`Rejected` with a machine-readable reason for the metrics. The reason is never shown
to the sender: every rejection gets the same 401.

Signatures are compared with :func:`hmac.compare_digest`. The exact algorithms, with the
headers each provider sends, are written down in ``docs/inbound.md``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from collections.abc import Mapping

from hookgate.model.routing import SourceConfig
from hookgate.signing import InvalidSignature, secret_key
from hookgate.signing import verify as verify_standard_signature

__all__ = [
    "DEFAULT_API_KEY_HEADER",
    "DEFAULT_TOLERANCE",
    "REASONS",
    "SCHEMES",
    "Rejected",
    "get_header",
    "verify_api_key",
    "verify_basic",
    "verify_github",
    "verify_hmac",
    "verify_request",
    "verify_shopify",
    "verify_standard_webhooks",
    "verify_stripe",
]

SCHEMES = ("github", "stripe", "shopify", "standard-webhooks", "hmac", "basic", "api-key")
DEFAULT_TOLERANCE = 300.0  # seconds a signed timestamp may be away from now
DEFAULT_API_KEY_HEADER = "X-Api-Key"

#: Why a request was refused; the ``reason`` label of ``hookgate_inbound_rejected_total``.
REASONS = (
    "missing_signature",  # the signature header (or one of the signed headers) is absent
    "malformed_signature",  # present but not in the scheme's format
    "bad_signature",  # well-formed, but no signature matches the secret
    "stale_timestamp",  # correctly signed, but the signed time is outside the tolerance
    "missing_credentials",  # basic / api-key: no credentials sent
    "bad_credentials",  # basic / api-key: wrong credentials
)

Headers = Mapping[str, str]


class Rejected(Exception):
    """The request is not from the sender. ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def get_header(headers: Headers, name: str) -> str | None:
    """The header ``name``, whatever the case of the keys of ``headers``."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _bytes(text: str) -> bytes:
    # Header values may hold anything a client sent; never fail on encoding them.
    return text.encode("utf-8", "surrogatepass")


def _equal(expected: str, given: str) -> bool:
    return hmac.compare_digest(_bytes(expected), _bytes(given))


def _hmac(secret: str, message: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(_bytes(secret), message, getattr(hashlib, algorithm)).digest()


def _json_field(body: bytes, name: str) -> str | None:
    """A top-level string (or number) field of a JSON object body, else None."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    value = doc.get(name) if isinstance(doc, dict) else None
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def verify_github(secret: str, headers: Headers, body: bytes) -> str | None:
    """GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``.

    Returns ``X-GitHub-Delivery``. GitHub signs neither a time nor its headers, so replays
    are caught by the delivery id only.
    """
    given = get_header(headers, "X-Hub-Signature-256")
    if not given:
        raise Rejected("missing_signature", "no X-Hub-Signature-256 header")
    given = given.strip()
    if not given.startswith("sha256="):
        raise Rejected("malformed_signature", "X-Hub-Signature-256 does not start with sha256=")
    expected = "sha256=" + _hmac(secret, body).hex()
    if not _equal(expected, "sha256=" + given.removeprefix("sha256=").lower()):
        raise Rejected("bad_signature", "X-Hub-Signature-256 does not match")
    return get_header(headers, "X-GitHub-Delivery") or None


def verify_stripe(secret: str, headers: Headers, body: bytes, now: float,
                  tolerance: float = DEFAULT_TOLERANCE) -> str | None:
    """Stripe: ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "{t}.{body}")>[,v1=...]``.

    The secret (``whsec_...``) is the HMAC key as it is, text included. Any one ``v1`` entry
    may match (Stripe sends several while a secret is rolled); ``v0`` and other schemes are
    ignored. Checked before the time, so a stale request is only reported as such when it
    is genuine. Returns the event ``id`` of the JSON body.
    """
    given = get_header(headers, "Stripe-Signature")
    if not given:
        raise Rejected("missing_signature", "no Stripe-Signature header")
    stamp: str | None = None
    candidates: list[str] = []
    for item in given.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t" and stamp is None:
            stamp = value
        elif key == "v1":
            candidates.append(value.lower())
    if stamp is None or not candidates:
        raise Rejected("malformed_signature", "Stripe-Signature lacks t= or v1=")
    if not (stamp.isascii() and stamp.isdigit()):
        raise Rejected("malformed_signature", "Stripe-Signature t= is not a whole number")
    timestamp = int(stamp)
    # The signed text is the t= value exactly as sent, a dot, then the raw body.
    expected = _hmac(secret, stamp.encode() + b"." + body).hex()
    # Compare with every candidate, not stopping at the first match.
    if not sum(_equal(expected, c) for c in candidates):
        raise Rejected("bad_signature", "no v1 signature in Stripe-Signature matches")
    if abs(now - timestamp) > tolerance:
        raise Rejected("stale_timestamp", f"Stripe-Signature t= is more than {tolerance:g}s "
                       "from now")
    return _json_field(body, "id")


def verify_shopify(secret: str, headers: Headers, body: bytes) -> str | None:
    """Shopify: ``X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(secret, body)>``.

    Returns ``X-Shopify-Webhook-Id``. Shopify signs no time, so replays are caught by the
    webhook id only.
    """
    given = get_header(headers, "X-Shopify-Hmac-Sha256")
    if not given:
        raise Rejected("missing_signature", "no X-Shopify-Hmac-Sha256 header")
    expected = base64.b64encode(_hmac(secret, body)).decode()
    if not _equal(expected, given.strip()):
        raise Rejected("bad_signature", "X-Shopify-Hmac-Sha256 does not match")
    return get_header(headers, "X-Shopify-Webhook-Id") or None


def verify_standard_webhooks(secret: str, headers: Headers, body: bytes, now: float,
                             tolerance: float = DEFAULT_TOLERANCE) -> str:
    """Standard Webhooks v1: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``.

    The signature is ``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`` where the
    key is the base64 part of a ``whsec_`` secret; several space-separated entries may be
    sent, and ``secret`` may hold several space-separated secrets (rotation). Uses the same
    check as the receivers of our own deliveries (:func:`hookgate.signing.verify`).
    Returns ``webhook-id``.
    """
    msg_id = get_header(headers, "webhook-id")
    stamp = get_header(headers, "webhook-timestamp")
    signature = get_header(headers, "webhook-signature")
    if not (msg_id and stamp and signature):
        raise Rejected("missing_signature",
                       "missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise Rejected("malformed_signature", "webhook-timestamp is not a whole number"
                       ) from None
    keys = []
    for value in secret.split():
        try:
            keys.append(secret_key(value))
        except ValueError:
            continue  # the compiler refuses such secrets; never let one verify anything
    canonical = {"webhook-id": msg_id, "webhook-timestamp": stamp,
                 "webhook-signature": signature}
    try:
        # The signature first (no time limit), then the time: stale_timestamp then means a
        # genuine request that came too late, not a forgery.
        verify_standard_signature(keys, canonical, body, now, tolerance=math.inf)
    except InvalidSignature:
        raise Rejected("bad_signature", "no webhook-signature entry matches") from None
    if abs(now - timestamp) > tolerance:
        raise Rejected("stale_timestamp", f"webhook-timestamp is more than {tolerance:g}s "
                       "from now")
    return msg_id


def verify_hmac(secret: str, headers: Headers, body: bytes, *, header: str,
                algorithm: str = "sha256", encoding: str = "hex", prefix: str = "") -> None:
    """Generic: ``{header}: {prefix}<hex or base64 HMAC-{algorithm}(secret, body)>``.

    Hex is compared case-insensitively. Carries no delivery id and no time.
    """
    if algorithm not in ("sha256", "sha512") or encoding not in ("hex", "base64"):
        raise ValueError(f"unsupported hmac algorithm {algorithm!r} / encoding {encoding!r}")
    given = get_header(headers, header)
    if not given:
        raise Rejected("missing_signature", f"no {header} header")
    given = given.strip()
    if prefix:
        if not given.startswith(prefix):
            raise Rejected("malformed_signature", f"{header} does not start with {prefix!r}")
        given = given[len(prefix):]
    digest = _hmac(secret, body, algorithm)
    if encoding == "hex":
        expected, given = digest.hex(), given.lower()
    else:
        expected = base64.b64encode(digest).decode()
    if not _equal(expected, given):
        raise Rejected("bad_signature", f"{header} does not match")


def verify_basic(username: str, password: str, headers: Headers) -> None:
    """HTTP basic authentication: ``Authorization: Basic base64(username:password)``."""
    given = get_header(headers, "Authorization")
    scheme, _, credentials = (given or "").strip().partition(" ")
    if scheme.lower() != "basic" or not credentials.strip():
        raise Rejected("missing_credentials", "no Authorization: Basic header")
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Rejected("bad_credentials", "Authorization: Basic is not base64 text") from None
    user, sep, secret = decoded.partition(":")
    # Both compared, always: the time taken does not tell which one was wrong.
    ok = _equal(username, user) & _equal(password, secret) & bool(sep)
    if not ok:
        raise Rejected("bad_credentials", "wrong username or password")


def verify_api_key(key: str, headers: Headers, header: str = DEFAULT_API_KEY_HEADER) -> None:
    """A static key in a header (``Authorization: Bearer <key>`` when the header is
    Authorization). Any one of several space-separated keys in the secret is accepted."""
    given = (get_header(headers, header) or "").strip()
    if header.lower() == "authorization":
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "bearer":
            given = token.strip()
    if not given:
        raise Rejected("missing_credentials", f"no {header} header")
    if not sum(_equal(k, given) for k in key.split()):
        raise Rejected("bad_credentials", f"{header} is not a valid key")


def verify_request(source: SourceConfig, secret: Mapping[str, str], headers: Headers,
                   body: bytes, now: float) -> str | None:
    """Verify one request to ``source``; the provider's delivery id, or raises Rejected.

    ``secret`` is the source's entry of the compiled source secrets: ``{"secret": ...}``,
    or ``{"username": ..., "password": ...}`` for basic.
    """
    scheme = source.scheme
    if scheme == "basic":
        verify_basic(secret.get("username", ""), secret.get("password", ""), headers)
        return None
    value = secret.get("secret", "")
    if not value:
        # Not reachable from a compiled config (a missing secret is a problem there); an
        # empty HMAC key must never verify anything.
        raise Rejected("bad_signature", "the source has no secret")
    if scheme == "github":
        return verify_github(value, headers, body)
    if scheme == "stripe":
        return verify_stripe(value, headers, body, now, source.tolerance)
    if scheme == "shopify":
        return verify_shopify(value, headers, body)
    if scheme == "standard-webhooks":
        return verify_standard_webhooks(value, headers, body, now, source.tolerance)
    if scheme == "hmac":
        verify_hmac(value, headers, body, header=source.header or "",
                    algorithm=source.algorithm, encoding=source.encoding,
                    prefix=source.prefix)
        return None
    if scheme == "api-key":
        verify_api_key(value, headers, source.header or DEFAULT_API_KEY_HEADER)
        return None
    raise ValueError(f"unknown verification scheme {scheme!r}; one of {', '.join(SCHEMES)}")
