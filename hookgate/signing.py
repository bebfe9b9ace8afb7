"""Standard Webhooks v1 signatures (HMAC-SHA256), the scheme every delivery carries.

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the key is the base64
part of a ``whsec_`` secret. During a rotation every active secret signs, and the header
lists each signature separated by a space, so a receiver holding either secret verifies.

Asymmetric signing (Standard Webhooks ``v1a``): a ``whsk_`` secret is base64 of an Ed25519
private key (the 32-byte seed, or seed and public key, 64 bytes); it signs the same content
and the header entry is ``v1a,<base64 signature>``. Receivers verify with the public key
(``whpk_`` + base64), see :func:`public_key`. Both kinds may be active at once.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "ASYMMETRIC_PREFIX",
    "PUBLIC_PREFIX",
    "SECRET_PREFIX",
    "InvalidSignature",
    "SigningKey",
    "generate_asymmetric_secret",
    "generate_secret",
    "hmac_sha256",
    "public_key",
    "secret_key",
    "sign",
    "signature_header",
    "signing_key",
    "verify",
    "verify_asymmetric",
]

SECRET_PREFIX = "whsec_"
ASYMMETRIC_PREFIX = "whsk_"
PUBLIC_PREFIX = "whpk_"

#: An HMAC key (bytes of a whsec_ secret) or an Ed25519 private key (a whsk_ secret).
SigningKey = bytes | Ed25519PrivateKey


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


def generate_asymmetric_secret() -> str:
    """A new Ed25519 signing secret: ``whsk_`` and base64 of a 32-byte seed."""
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    return ASYMMETRIC_PREFIX + base64.b64encode(seed).decode()


def _ed25519(secret: str) -> Ed25519PrivateKey:
    try:
        raw = base64.b64decode(secret.removeprefix(ASYMMETRIC_PREFIX), validate=True)
    except binascii.Error as exc:
        raise ValueError("an asymmetric signing secret is 'whsk_' followed by base64") from exc
    if len(raw) not in (32, 64):
        raise ValueError("a whsk_ secret holds a 32-byte Ed25519 seed (or 64 with the public key)")
    return Ed25519PrivateKey.from_private_bytes(raw[:32])


def signing_key(secret: str) -> SigningKey:
    """The key of a ``whsec_`` (HMAC) or ``whsk_`` (Ed25519) secret; ``ValueError`` otherwise."""
    if secret.startswith(ASYMMETRIC_PREFIX):
        return _ed25519(secret)
    return secret_key(secret)


def public_key(secret: str) -> str:
    """The ``whpk_`` public key receivers verify ``v1a`` signatures of a ``whsk_`` secret with."""
    raw = _ed25519(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_PREFIX + base64.b64encode(raw).decode()


def _content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return b"%s.%d.%s" % (msg_id.encode(), timestamp, body)


_BLOCK = 64  # SHA-256's block size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


@functools.lru_cache(maxsize=16384)
def _keyed(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256 (RFC 2104) prepared for ``key``: the inner and outer hashes after their
    padded keys. Signing copies them instead of keying HMAC anew for every delivery, which
    halves the cost of a signature (the gateway signs every attempt)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))


def hmac_sha256(key: bytes, content: bytes) -> bytes:
    """``hmac.new(key, content, sha256).digest()``, with the keyed state cached per key."""
    inner, outer = _keyed(key)
    inner, outer = inner.copy(), outer.copy()
    inner.update(content)
    outer.update(inner.digest())
    digest: bytes = outer.digest()
    return digest


def sign(key: SigningKey, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` (HMAC) or ``v1a,<base64>`` (Ed25519) signature."""
    content = _content(msg_id, timestamp, body)
    if isinstance(key, Ed25519PrivateKey):
        return "v1a," + base64.b64encode(key.sign(content)).decode()
    return "v1," + base64.b64encode(hmac_sha256(key, content)).decode()


def signature_header(keys: Iterable[SigningKey], msg_id: str, timestamp: int,
                     body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per active key, space separated."""
    return " ".join(sign(k, msg_id, timestamp, body) for k in keys)


class InvalidSignature(ValueError):
    """The request does not carry a valid signature; ``str()`` says why."""


def _signed_headers(headers: Mapping[str, str], now: float, tolerance: float
                    ) -> tuple[str, int, str]:
    """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``, checked for presence
    and freshness (replay protection); header names case-insensitive."""
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
    return msg_id, timestamp, given


def verify(secret_keys: Iterable[bytes], headers: Mapping[str, str], body: bytes, now: float,
           tolerance: float = 300.0) -> str:
    """Check Standard Webhooks headers; returns the ``webhook-id`` or raises InvalidSignature.

    Header names are looked up case-insensitively. Any one matching ``v1`` signature among
    the space-separated entries is enough (rotation).
    """
    msg_id, timestamp, given = _signed_headers(headers, now, tolerance)
    candidates = [s.partition(",")[2] for s in given.split() if s.startswith("v1,")]
    for key in secret_keys:
        expected = sign(key, msg_id, timestamp, body).partition(",")[2]
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return msg_id
    raise InvalidSignature("no signature matches the secret")


def verify_asymmetric(public_keys: Iterable[str], headers: Mapping[str, str], body: bytes,
                      now: float, tolerance: float = 300.0) -> str:
    """Check a ``v1a`` (Ed25519) signature against ``whpk_`` public keys; returns the
    ``webhook-id`` or raises InvalidSignature. For receivers and tests."""
    msg_id, timestamp, given = _signed_headers(headers, now, tolerance)
    content = _content(msg_id, timestamp, body)
    candidates = [s.partition(",")[2] for s in given.split() if s.startswith("v1a,")]
    for text in public_keys:
        key = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(text.removeprefix(PUBLIC_PREFIX)))
        for candidate in candidates:
            try:
                key.verify(base64.b64decode(candidate), content)
                return msg_id
            except Exception:  # InvalidSignature of cryptography, or bad base64
                continue
    raise InvalidSignature("no v1a signature matches the public key")
