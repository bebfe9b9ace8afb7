"""The SSRF guard's classification: one table of addresses per range, no traffic."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from hookgate.deliverer.delivery.network_guard import (
    LOOPBACK_CIDRS,
    AddressPolicy,
    AddressRefused,
    GuardedResolver,
    classify,
    legacy_ipv4,
)

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.5", "private"),
    ("172.16.3.4", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("fd12:3456::1", "private"),
    ("fc00::1", "private"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("169.254.169.254", "metadata"),
    ("fd00:ec2::254", "metadata"),
    ("240.0.0.1", ""),  # reserved (Python calls it private too): refused either way
    ("255.255.255.255", ""),
    ("192.0.2.10", ""),  # documentation ranges are not routable
    ("198.18.0.1", ""),  # benchmarking
    ("::ffff:10.0.0.5", "private"),  # IPv4-mapped: judged by the IPv4 inside
    ("::ffff:127.0.0.1", "loopback"),
    ("64:ff9b::a00:5", "private"),  # NAT64 of 10.0.0.5
    ("2002:a00:5::1", "private"),  # 6to4 of 10.0.0.5
]

PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "100.63.255.255", "100.128.0.0",
          "172.15.255.255", "172.32.0.0", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    found = classify(address)
    assert found is not None, f"{address} should be refused"
    assert reason.lower() in found.lower()
    message = AddressPolicy().refusal(address)
    assert message is not None and "network.allowCIDRs" in message


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert classify(address) is None
    assert AddressPolicy().refusal(address) is None


def test_message_names_the_address_and_the_fix() -> None:
    assert AddressPolicy().refusal("10.0.0.5") == (
        "address 10.0.0.5 is private; allow it with network.allowCIDRs on the WebhookGateway "
        "if the endpoint is meant to be reached there")


def test_allow_cidrs_make_exceptions() -> None:
    policy = AddressPolicy(["10.1.0.0/16", *LOOPBACK_CIDRS])
    assert policy.refusal("10.1.2.3") is None
    assert policy.refusal("127.0.0.1") is None and policy.refusal("::1") is None
    assert policy.refusal("10.2.0.1") is not None
    assert policy.refusal("169.254.169.254") is not None


def test_ip_literal_hosts_are_checked_before_connecting() -> None:
    policy = AddressPolicy()
    with pytest.raises(AddressRefused, match="loopback"):
        policy.check_host("127.0.0.1")
    with pytest.raises(AddressRefused, match="loopback"):
        policy.check_host("[::1]")
    policy.check_host("hooks.example.com")  # names are left to the resolver
    policy.check_host("8.8.8.8")


class FakeResolver(AbstractResolver):
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [{"hostname": host, "host": a, "port": port, "family": family, "proto": 0,
                 "flags": 0} for a in self.answers[host]]

    async def close(self) -> None:
        pass


async def test_resolver_drops_refused_addresses_and_refuses_when_none_is_left() -> None:
    resolver = GuardedResolver(AddressPolicy(), FakeResolver({
        "mixed.example": ["10.0.0.5", "93.184.216.34"],
        "rebound.example": ["169.254.169.254"],
    }))
    kept = await resolver.resolve("mixed.example", 443)
    assert [r["host"] for r in kept] == ["93.184.216.34"]
    with pytest.raises(AddressRefused, match=r"169\.254\.169\.254 is a cloud metadata address"):
        await resolver.resolve("rebound.example", 443)
    resolver.policy = AddressPolicy(["169.254.169.254/32"])  # a config change applies at once
    assert len(await resolver.resolve("rebound.example", 443)) == 1


@pytest.mark.parametrize(("host", "address"), [
    ("167772161", "10.0.0.1"), ("0x0a000001", "10.0.0.1"), ("012.0.0.1", "10.0.0.1"),
    ("10.1", "10.0.0.1"), ("127.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"),
    ("2852039166", "169.254.169.254"),
])
def test_legacy_numeric_ipv4_forms_are_judged_as_the_address_they_are(host: str,
                                                                      address: str) -> None:
    assert str(legacy_ipv4(host)) == address
    with pytest.raises(AddressRefused, match=f"IPv4 address {address} written in a legacy"):
        AddressPolicy(()).check_host(host)


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "10.256.0.1", "08", "99999999999",
                                  "a1", "1e3"])
def test_names_that_are_not_numeric_ipv4_forms_are_left_to_the_resolver(host: str) -> None:
    assert legacy_ipv4(host) is None
    AddressPolicy(()).check_host(host)  # no refusal here: the resolver judges what it resolves


def test_a_public_address_in_a_numeric_form_is_not_refused() -> None:
    assert str(legacy_ipv4("134744072")) == "8.8.8.8"
    AddressPolicy(()).check_host("134744072")
