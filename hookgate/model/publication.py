"""How a gateway's config travels through the Kubernetes API, at any size.

An object in the API holds at most 1 MiB, and the routing config of a few thousand endpoints
is larger than that. So the operator publishes each version of a gateway's config as:

- **parts**: the routing document and the keys document, each gzip-compressed and cut into
  chunks of at most :data:`SHARD_BYTES`. Each chunk is one *shard*: an immutable ConfigMap for
  the routing part, an immutable Secret for the keys part (secrets only ever in Secrets). A
  shard's name carries the digest of its part's document, so a name always means the same
  bytes: shards are written once and never changed.
- a **manifest**: one small ConfigMap with a fixed name that names the shards of the current
  version, with their digests, and the gateway's non-secret settings.

The operator writes the shards first and the manifest last; a deliverer reads the manifest,
then the shards it names, checks the digests and only then switches to the new version, whole.
A deliverer that read the manifest just before a newer one replaced it still finds the shards
it names: the operator deletes shards only once two newer versions exist.

Pure: names, packing and unpacking, and the manifest's format. No I/O.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hookgate.model.bundle import GatewayConfig

__all__ = ["FORMAT", "KEYS_FILE", "MANIFEST_KEY", "ROUTING_FILE", "SHARD_BYTES", "Manifest",
           "Part", "Publication", "manifest_name", "pack", "publish", "read", "shard_name",
           "unpack"]

#: Version of the manifest's layout; a deliverer refuses a manifest of another format.
FORMAT = 1
#: The manifest ConfigMap's data key.
MANIFEST_KEY = "manifest.json"
#: The key of a routing shard's chunk (ConfigMap ``binaryData``).
ROUTING_FILE = "routing.json.gz"
#: The key of a keys shard's chunk (Secret ``data``).
KEYS_FILE = "keys.json.gz"
#: The most compressed bytes in one shard: well under the API's 1 MiB object limit, leaving
#: room for metadata.
SHARD_BYTES = 768 * 1024


def manifest_name(gateway: str) -> str:
    """The ConfigMap that names the current version of a gateway's config."""
    return f"hookgate-{gateway}-config"


def shard_name(gateway: str, part: str, digest: str, index: int) -> str:
    """The object holding chunk ``index`` of a part (``routing`` or ``keys``) of a version."""
    kind = "config" if part == "routing" else "keys"
    return f"hookgate-{gateway}-{kind}-{digest[:16]}-{index}"


@dataclass(frozen=True)
class Part:
    """One document, compressed and cut into chunks that each fit in one object."""

    digest: str  # sha256 (hex) of the uncompressed document
    chunks: tuple[bytes, ...]


def pack(document: bytes, limit: int = SHARD_BYTES) -> Part:
    """Compress ``document`` and cut it into chunks of at most ``limit`` bytes.

    The same document always packs to the same chunks (no timestamp in the gzip header), so
    re-publishing an unchanged config writes nothing."""
    data = gzip.compress(document, compresslevel=6, mtime=0)
    chunks = tuple(data[i:i + limit] for i in range(0, len(data), limit)) or (b"",)
    return Part(hashlib.sha256(document).hexdigest(), chunks)


def unpack(digest: str, chunks: Sequence[bytes]) -> bytes:
    """The document the chunks hold; ValueError unless it is whole and matches ``digest``."""
    try:
        document = gzip.decompress(b"".join(chunks))
    except (OSError, EOFError) as exc:
        raise ValueError(f"the config shards are not a whole gzip stream ({exc})") from None
    if hashlib.sha256(document).hexdigest() != digest:
        raise ValueError("the config shards do not match the digest in the manifest")
    return document


@dataclass(frozen=True)
class Manifest:
    """What one published version consists of: shard names and digests, and the settings."""

    routing_digest: str
    routing_shards: tuple[str, ...]
    keys_digest: str
    keys_shards: tuple[str, ...]
    settings: Mapping[str, Any]

    @property
    def version(self) -> str:
        """Names the version: changes whenever the routing, the keys or a setting does."""
        settings = json.dumps(dict(self.settings), sort_keys=True).encode()
        return hashlib.sha256(self.routing_digest.encode() + self.keys_digest.encode()
                              + settings).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": self.version,
                           "settings": dict(self.settings),
                           "routing": {"sha256": self.routing_digest,
                                       "shards": list(self.routing_shards)},
                           "keys": {"sha256": self.keys_digest,
                                    "shards": list(self.keys_shards)}}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest; ValueError saying what is wrong with it."""
        try:
            doc = json.loads(text)
            found = doc.get("format")
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"the config manifest is malformed ({exc!r})") from None
        if found != FORMAT:
            raise ValueError(f"the config manifest has format {found!r}, this deliverer "
                             f"reads format {FORMAT}: run the operator and deliverers of "
                             "one Hookgate version")
        try:
            routing, keys = doc["routing"], doc["keys"]
            return cls(str(routing["sha256"]), tuple(str(s) for s in routing["shards"]),
                       str(keys["sha256"]), tuple(str(s) for s in keys["shards"]),
                       dict(doc.get("settings") or {}))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"the config manifest is malformed ({exc!r})") from None


@dataclass(frozen=True)
class Publication:
    """One version of a gateway's config as the operator writes it."""

    manifest: Manifest
    routing: Part
    keys: Part


def publish(gateway: str, config: GatewayConfig, limit: int = SHARD_BYTES) -> Publication:
    """Pack ``config`` of gateway ``gateway`` (its name) into parts of shards of at most
    ``limit`` bytes, and their manifest."""
    routing = pack(config.routing_document(), limit)
    keys = pack(config.keys_document(), limit)
    manifest = Manifest(
        routing.digest,
        tuple(shard_name(gateway, "routing", routing.digest, i)
              for i in range(len(routing.chunks))),
        keys.digest,
        tuple(shard_name(gateway, "keys", keys.digest, i) for i in range(len(keys.chunks))),
        config.settings())
    return Publication(manifest, routing, keys)


def read(manifest: Manifest, routing: Sequence[bytes], keys: Sequence[bytes]
         ) -> GatewayConfig:
    """The config a manifest and the chunks of its shards hold; ValueError if they do not
    fit together (a torn read: read the manifest again)."""
    return GatewayConfig.from_documents(unpack(manifest.routing_digest, routing),
                                        manifest.settings,
                                        unpack(manifest.keys_digest, keys))
