"""Where a partitioned queue puts things: pure placement and hash tags."""

from __future__ import annotations

from collections import Counter

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from hookgate.deliverer.queues.redis.keys import Keys, partition_tag
from hookgate.deliverer.queues.redis.partitions import place


def test_a_sequence_stays_in_one_partition_and_unordered_deliveries_go_home() -> None:
    for home in range(4):
        groups = place(["shop/a", "shop/b", "shop/c"], {"shop/a": "cust-1"}, home, 4)
        ordered = next(p for p, eps in groups.items() if "shop/a" in eps)
        assert ordered == next(p for p, eps in place(["shop/a"], {"shop/a": "cust-1"}, 0, 4)
                               .items())  # the same key, whatever the event's home
        assert "shop/b" in groups[home] and "shop/c" in groups[home]


def test_ordering_keys_spread_over_the_partitions() -> None:
    seen = Counter(next(iter(place(["shop/a"], {"shop/a": f"cust-{n}"}, 0, 4)))
                   for n in range(4000))
    assert set(seen) == {0, 1, 2, 3} and min(seen.values()) > 800  # about 1000 each


def test_partition_zero_keeps_the_tag_of_an_unpartitioned_gateway() -> None:
    assert Keys("shop/default").stream == Keys("shop/default", 0, 4).stream \
        == "hookgate:{shop/default}:deliveries"


def test_each_partition_has_a_slot_in_its_own_part_of_the_slot_space() -> None:
    for gateway in ("shop/default", "payments/eu", "a/b"):
        for partitions in (2, 3, 4, 8):
            share = REDIS_CLUSTER_HASH_SLOTS / partitions
            ranges = {int(key_slot(partition_tag(gateway, p, partitions).encode()) // share)
                      for p in range(partitions)}
            assert ranges == set(range(partitions)), (gateway, partitions)
