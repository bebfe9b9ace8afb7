"""How a gateway's config is cut into shards and put back together."""

from __future__ import annotations

import os

import pytest

from hookgate.model.bundle import GatewayConfig
from hookgate.model.compiler import Compiled
from hookgate.model.publication import (
    SHARD_BYTES,
    Manifest,
    pack,
    publish,
    read,
    shard_name,
    unpack,
)
from hookgate.model.routing import EndpointConfig, RoutingConfig


def config_of(n: int, api_keys: tuple[str, ...] = ()) -> GatewayConfig:
    endpoints = {f"shop/e{i}": EndpointConfig(f"shop/e{i}", f"https://e{i}.example/hook", 5,
                                              (0, 5)) for i in range(n)}
    keys = {k: (f"whsec_{os.urandom(24).hex()}",) for k in endpoints}
    return GatewayConfig(Compiled(RoutingConfig("shop/default", endpoints), keys), api_keys)


def test_a_document_larger_than_one_object_is_cut_into_shards_and_joined_again() -> None:
    document = os.urandom(3 * SHARD_BYTES // 2)  # random bytes do not compress
    part = pack(document)
    assert len(part.chunks) == 2 and all(len(c) <= SHARD_BYTES for c in part.chunks)
    assert unpack(part.digest, part.chunks) == document


def test_packing_the_same_document_twice_gives_the_same_chunks() -> None:
    document = b'{"endpoints": []}' * 1000
    assert pack(document) == pack(document)


def test_a_torn_or_foreign_read_is_refused() -> None:
    old, new = pack(os.urandom(5000), limit=1000), pack(os.urandom(5000), limit=1000)
    with pytest.raises(ValueError, match="do not match the digest"):
        unpack(new.digest, old.chunks)  # whole, but another version
    with pytest.raises(ValueError, match="not a whole gzip stream"):
        unpack(new.digest, new.chunks[:-1])  # a shard missing
    with pytest.raises(ValueError, match="not a whole gzip stream"):
        unpack(new.digest, (*new.chunks[:2], *old.chunks[2:]))  # half old, half new


def test_a_published_config_reads_back_equal_and_names_its_shards_by_digest() -> None:
    config = config_of(2000, ("api-key",))
    publication = publish("default", config)
    manifest = publication.manifest
    assert manifest.routing_shards == tuple(
        shard_name("default", "routing", publication.routing.digest, i)
        for i in range(len(publication.routing.chunks)))
    assert all(name.startswith("hookgate-default-keys-") for name in manifest.keys_shards)
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest
    assert read(again, publication.routing.chunks, publication.keys.chunks) == config


def test_the_version_changes_with_routing_keys_or_settings_and_only_then() -> None:
    config = config_of(3)
    version = publish("default", config).manifest.version
    assert publish("default", config_of(3)).manifest.version != version  # new keys
    assert publish("default", config).manifest.version == version
    same_routing = GatewayConfig(config.compiled, ("k",))
    assert publish("default", same_routing).manifest.version != version
    assert publish("default", same_routing).manifest.routing_shards == \
        publish("default", config).manifest.routing_shards
    wider = GatewayConfig(config.compiled, max_body_bytes=1024)
    assert publish("default", wider).manifest.version != version


def test_a_manifest_of_another_format_or_shape_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="format 2, this deliverer reads format 1"):
        Manifest.from_json('{"format": 2}')
    with pytest.raises(ValueError, match="malformed"):
        Manifest.from_json('{"format": 1, "routing": {}}')
    with pytest.raises(ValueError, match="malformed"):
        Manifest.from_json("not json")
