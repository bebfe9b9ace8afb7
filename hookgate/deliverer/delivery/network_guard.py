"""The SSRF guard: deliveries never reach addresses inside the cluster or the machine.

A webhook URL is chosen by whoever configures an endpoint, often a customer. Without a
guard, ``http://169.254.169.254/latest/meta-data/`` or ``http://redis.default:6379/`` would
make the gateway a proxy into the network it runs in. So by default every address that is
not plainly public is refused: loopback, private (RFC 1918, ULA), link-local, CGNAT
(100.64.0.0/10), multicast, reserved, unspecified, and the cloud metadata addresses.
``WebhookGateway.spec.network.allowCIDRs`` lists the exceptions (``hookgate run`` adds
127.0.0.0/8 and ::1/128 so a local receiver works).

The check is made on the address actually connected to, not on the URL's host name: a
:class:`GuardedResolver` wraps aiohttp's resolver and drops refused addresses from every
answer, so a name that resolves to a public address at check time and to 10.0.0.5 at
connect time (DNS rebinding) cannot get through. URLs whose host is an IP literal never
reach a resolver; :meth:`AddressPolicy.check_host` is called on them before the request.

Pure classification (:func:`classify`) is separate from the resolver, so every range is
unit-tested without traffic.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

__all__ = [
    "LOOPBACK_CIDRS",
    "METADATA_ADDRESSES",
    "AddressPolicy",
    "AddressRefused",
    "GuardedResolver",
    "classify",
    "legacy_ipv4",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: What ``hookgate run`` allows on top of the gateway's allowCIDRs, for local receivers.
LOOPBACK_CIDRS = ("127.0.0.0/8", "::1/128")
#: Instance metadata services (AWS, GCP, Azure, OpenStack: 169.254.169.254; AWS IPv6).
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"),
                                ipaddress.ip_address("fd00:ec2::254")})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class AddressRefused(OSError):
    """A delivery's destination address is refused by the SSRF guard; ``str()`` says why
    and how to allow it. An ``OSError`` so aiohttp passes it through as a connect error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def classify(address: str | IPAddress) -> str | None:
    """Why ``address`` is refused by default ("private", "loopback", ...), or None if public.

    IPv4-mapped and 6to4/NAT64-embedded IPv4 forms are judged by the IPv4 address inside.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip in ipaddress.ip_network("64:ff9b::/96"):
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            return classify(inner)
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "shared address space (CGNAT, 100.64.0.0/10)"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


class AddressPolicy:
    """Refuses non-public addresses unless an allowed CIDR contains them."""

    def __init__(self, allow_cidrs: Iterable[str] = ()) -> None:
        self.allow: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in allow_cidrs)

    def refusal(self, address: str) -> str | None:
        """The message explaining why ``address`` is refused, or None when it is allowed."""
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            return f"address {address!r} is not an IP address"
        if any(ip.version == net.version and ip in net for net in self.allow):
            return None
        reason = classify(ip)
        if reason is None:
            return None
        return (f"address {ip} is {reason}; allow it with network.allowCIDRs "
                "on the WebhookGateway if the endpoint is meant to be reached there")

    def check_host(self, host: str | None) -> None:
        """Raise :class:`AddressRefused` if ``host`` is an IP literal that is refused.

        Host names are left to :class:`GuardedResolver`, which sees what they resolve to.
        """
        if not host:
            return
        literal = host.strip("[]")
        try:
            ipaddress.ip_address(literal.partition("%")[0])
        except ValueError:
            legacy = legacy_ipv4(literal)
            if legacy is None:
                return
            message = self.refusal(str(legacy))
            if message is not None:
                raise AddressRefused(f"host {host!r} is the IPv4 address {legacy} written in "
                                     f"a legacy numeric form; {message}") from None
            return
        message = self.refusal(literal)
        if message is not None:
            raise AddressRefused(message)


def legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a host written in one of the numeric forms ``inet_aton`` accepts
    denotes (``167772161``, ``0x0a000001``, ``012.0.0.1``, ``10.1``), or None when ``host``
    is not one. Resolvers turn these into addresses without a lookup, so the guard must
    judge them as the addresses they are."""
    parts = host.rstrip(".").split(".") if host else []
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        try:
            if part[:2].lower() == "0x":
                values.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                values.append(int(part, 8))
            elif part.isdigit():
                values.append(int(part))
            else:
                return None
        except ValueError:
            return None
    *head, last = values
    if any(v > 255 for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    value = last
    for i, v in enumerate(head):
        value |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that keeps only the addresses the current policy allows.

    ``policy`` is read on every lookup, so assigning a new one (a config change) applies to
    the next connection; the connector's DNS cache should be cleared at the same time.
    """

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner  # made on first use: aiohttp's resolvers need a running loop

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = DefaultResolver()
        results = await self._inner.resolve(host, port, family)
        kept: list[ResolveResult] = []
        refusals: list[str] = []
        for result in results:
            message = self.policy.refusal(str(result["host"]))
            if message is None:
                kept.append(result)
            else:
                refusals.append(message)
        if not kept and refusals:
            raise AddressRefused(f"{host} resolves to a refused address: {refusals[0]}")
        return kept

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def describe(exc: BaseException) -> AddressRefused | None:
    """The :class:`AddressRefused` inside an aiohttp connection error, if that was the cause."""
    seen: Any = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, AddressRefused):
            return seen
        seen = getattr(seen, "os_error", None) or seen.__cause__ or seen.__context__
    return None
