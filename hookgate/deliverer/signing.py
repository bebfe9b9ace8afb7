"""Standard Webhooks v1 signatures (HMAC-SHA256), the scheme every delivery carries.

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the key is the base64
part of a ``whsec_`` secret. During a rotation every active secret signs, and the header
lists each signature separated by a space, so a receiver holding either secret verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping

__all__ = [
    "SECRET_PREFIX",
    "InvalidSignature",
    "generate_secret",
    "secret_key",
    "sign",
    "signature_header",
    "verify",
]

SECRET_PREFIX = "whsec_"


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` and base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; ``ValueError`` if it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a signing secret starts with 'whsec_'")
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as exc:
        raise ValueError("a signing secret is 'whsec_' followed by base64") from exc


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature."""
    content = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(keys: Iterable[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per active key, space separated."""
    return " ".join(sign(k, msg_id, timestamp, body) for k in keys)


class InvalidSignature(ValueError):
    """The request does not carry a valid signature; ``str()`` says why."""


def verify(secret_keys: Iterable[bytes], headers: Mapping[str, str], body: bytes, now: float,
           tolerance: float = 300.0) -> str:
    """Check Standard Webhooks headers; returns the ``webhook-id`` or raises InvalidSignature.

    Header names are looked up case-insensitively. Any one matching ``v1`` signature among
    the space-separated entries is enough (rotation).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, given = (lower.get("webhook-id"), lower.get("webhook-timestamp"),
                            lower.get("webhook-signature"))
    if not (msg_id and stamp and given):
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise InvalidSignature("webhook-timestamp is not a whole number") from None
    if abs(now - timestamp) > tolerance:
        raise InvalidSignature("webhook-timestamp is too far from now (replay protection)")
    candidates = [s.partition(",")[2] for s in given.split() if s.startswith("v1,")]
    for key in secret_keys:
        expected = sign(key, msg_id, timestamp, body).partition(",")[2]
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return msg_id
    raise InvalidSignature("no signature matches the secret")
