"""Client identity: who sent a request (API key, IP behind trusted proxies) and its tier.

``X-Forwarded-For`` (or ``Forwarded``, as ``clients.forwarded_header`` says) is
believed only when the connecting peer is a trusted proxy, and then only as far
back as the chain stays trusted: the client address is the right-most entry that
is not itself a trusted proxy. A client that sends a forged header straight to the
service, or prepends forged entries for a proxy to append to, changes nothing.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from bastion.asgi import RequestContext, Scope
from bastion.config import ClientsConfig

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """The client of one request.

    ``id`` is stable per client and safe to log and to use in store keys: API keys
    are never used raw, only as a short SHA-256 digest.
    """

    id: str
    ip: str
    tier: str
    api_key: str | None = None


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip().strip('"')
    if value.startswith("["):  # [v6]:port
        value = value[1 : value.find("]")] if "]" in value else value[1:]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; compare them as IPv4.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _forwarded_for(header: bytes) -> list[str]:
    """The ``for=`` addresses of an RFC 7239 ``Forwarded`` header, in order."""
    found: list[str] = []
    for element in header.decode("latin-1").split(","):
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            if name.lower() == "for" and value:
                found.append(value.strip().strip('"'))
    return found


class ClientIdentifier:
    """Identifies clients as ``clients`` in the configuration says."""

    def __init__(self, config: ClientsConfig) -> None:
        self.sources: list[tuple[str, bytes]] = []
        for source in config.identify:
            if source == "ip":
                self.sources.append(("ip", b""))
            else:
                self.sources.append(("header", source[len("header:") :].lower().encode("latin-1")))
        self.trusted: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in config.trusted_proxies
        )
        # Only the header the proxies set is read: a proxy passes the other one through
        # untouched, so believing it would let a client forge its address.
        self.forwarded_header = config.forwarded_header.encode("latin-1")
        self.tiers = dict(config.tiers)
        self.default_tier = config.default_tier
        self._digests: dict[str, str] = {}

    def _is_trusted(self, address: str) -> bool:
        if not self.trusted:
            return False
        ip = _parse_ip(address)
        return ip is not None and any(ip in net for net in self.trusted)

    def client_ip(self, scope: Scope) -> str:
        """The client's IP address, following forwarding headers only from trusted proxies."""
        peer = scope.get("client")
        address = str(peer[0]) if peer else "unknown"
        if not self.trusted or not self._is_trusted(address):
            return address
        chain: list[str] = []
        wanted = self.forwarded_header
        for key, value in scope["headers"]:
            if key != wanted:
                continue
            if key == b"x-forwarded-for":
                chain.extend(p.strip() for p in value.decode("latin-1").split(","))
            else:
                chain.extend(_forwarded_for(value))
        # Walk from the nearest hop back; stop at the first address we do not trust.
        for hop in reversed(chain):
            ip = _parse_ip(hop)
            if ip is None:
                break
            address = str(ip)
            if not self._is_trusted(address):
                break
        return address

    def _digest(self, key: str) -> str:
        digest = self._digests.get(key)
        if digest is None:
            digest = "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
            if len(self._digests) < 100_000:
                self._digests[key] = digest
        return digest

    def identify(self, scope: Scope) -> ClientIdentity:
        """The identity of the request's client: the first configured source present."""
        return ClientIdentity(*self.resolve(scope))

    def resolve(self, scope: Scope) -> tuple[str, str, str, str | None]:
        """``(id, ip, tier, api_key)`` of the request's client, without building an object.

        :meth:`fill` and :meth:`identify` are the same answer in other shapes.
        """
        ip = self.client_ip(scope)
        for kind, name in self.sources:
            if kind == "ip":
                return "ip:" + ip, ip, self.default_tier, None
            for key, value in scope["headers"]:
                if key == name and value:
                    api_key = value.decode("latin-1")
                    return self._digest(api_key), ip, self.tiers.get(api_key, self.default_tier), api_key
        return "ip:" + ip, ip, self.default_tier, None

    def fill(self, scope: Scope, ctx: RequestContext) -> None:
        """Put the client's id, IP and tier into ``ctx`` unless they are there already.

        Identity is worked out on first need (a rate limit rule, an idempotency key,
        the access log), not on every request: a request nothing asks about pays nothing.
        """
        if ctx.client_id is None:
            ctx.client_id, ctx.client_ip, ctx.tier, _ = self.resolve(scope)
