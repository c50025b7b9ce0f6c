"""Client identity: who sent a request (API key, IP behind trusted proxies) and its tier.

An API key names a client only when it is known: ``clients.keys`` (and
``clients.keys_file``) list the SHA-256 digests of the keys, never the keys. A key
that is not listed is anonymous (the client is its IP) or refused with
``401 API_KEY_INVALID``, as ``clients.unknown_keys`` says. Without a key list any
key is believed; the rate limit guard then also counts such clients per IP, so
inventing keys never buys more than an IP's budget.

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
from typing import TYPE_CHECKING

from bastion.asgi import SCOPE_KEY, ASGIApp, Receive, RequestContext, Scope, Send
from bastion.config import ClientsConfig
from bastion.problems import ApiKeyInvalid

if TYPE_CHECKING:
    from bastion.protocols import GuardContext

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The start of the id of a client named by an API key (``ip:`` starts the others).
KEY_ID_PREFIX = "key:"
# Keys remembered with what they resolved to, so a key is hashed once: at most this
# many, of at most this length, so that a flood of long invented keys costs no memory.
_MAX_REMEMBERED = 100_000
_MAX_REMEMBERED_LENGTH = 128


def key_digest(api_key: bytes) -> str:
    """The SHA-256 digest (hex) of an API key's bytes, as ``clients.keys`` lists it."""
    return hashlib.sha256(api_key).hexdigest()


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """The client of one request.

    ``id`` is stable per client and safe to log and to use in store keys: ``key:NAME``
    for a known key (``key:`` and the start of its digest without a name, or for any
    key when no key list is configured), else ``ip:ADDRESS``. API keys are never used raw.
    """

    id: str
    ip: str
    tier: str
    #: The key that named the client (``None`` when it is identified by IP); never logged.
    api_key: str | None = None


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """What a believed API key resolves to: the client's id and tier."""

    id: str
    tier: str


_UNSEEN = KeyHolder("", "")


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
        self.default_tier = config.default_tier
        known = config.known_keys()
        #: digest -> holder of each known key; ``None`` when no key list is configured.
        self.keys: dict[str, KeyHolder] | None = None
        if known is not None:
            self.keys = {
                key.sha256: KeyHolder(
                    KEY_ID_PREFIX + (key.name or key.sha256[:16]), key.tier or self.default_tier
                )
                for key in known
            }
        #: Whether a key nobody listed names a client (no key list, and a key header to read).
        self.believes_any_key = self.keys is None and any(kind == "header" for kind, _ in self.sources)
        #: Whether a request with an unknown key is refused (``clients.unknown_keys: reject``).
        self.rejects_unknown_keys = self.keys is not None and config.unknown_keys == "reject"
        self._remembered: dict[str, KeyHolder | None] = {}

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

    def holder(self, api_key: str) -> KeyHolder | None:
        """Who ``api_key`` names: its holder when the key is known (or any key is believed), else ``None``."""
        found = self._remembered.get(api_key, _UNSEEN)
        if found is not _UNSEEN:
            return found
        # Header values are decoded as latin-1: encoding back gives the bytes that were sent.
        digest = key_digest(api_key.encode("latin-1"))
        if self.keys is None:
            found = KeyHolder(KEY_ID_PREFIX + digest[:16], self.default_tier)
        else:
            # The digest of the presented key is computed first, so this lookup reveals
            # nothing about the listed digests through its timing.
            found = self.keys.get(digest)
        if len(api_key) <= _MAX_REMEMBERED_LENGTH and len(self._remembered) < _MAX_REMEMBERED:
            self._remembered[api_key] = found
        return found

    def presented_key(self, scope: Scope) -> str | None:
        """The API key that would name the request's client: the first source present, if a header."""
        for kind, name in self.sources:
            if kind == "ip":
                return None
            for key, value in scope["headers"]:
                if key == name and value:
                    return bytes(value).decode("latin-1")
        return None

    def identify(self, scope: Scope) -> ClientIdentity:
        """The identity of the request's client: the first configured source present."""
        return ClientIdentity(*self.resolve(scope))

    def resolve(self, scope: Scope) -> tuple[str, str, str, str | None]:
        """``(id, ip, tier, api_key)`` of the request's client, without building an object.

        A key that names nobody (not listed) leaves the client identified by IP.
        :meth:`fill` and :meth:`identify` are the same answer in other shapes.
        """
        ip = self.client_ip(scope)
        api_key = self.presented_key(scope)
        if api_key is not None:
            holder = self.holder(api_key)
            if holder is not None:
                return holder.id, ip, holder.tier, api_key
        return "ip:" + ip, ip, self.default_tier, None

    def fill(self, scope: Scope, ctx: RequestContext) -> None:
        """Put the client's id, IP and tier into ``ctx`` unless they are there already.

        Identity is worked out on first need (a rate limit rule, an idempotency key,
        the access log), not on every request: a request nothing asks about pays nothing.
        """
        if ctx.client_id is None:
            ctx.client_id, ctx.client_ip, ctx.tier, _ = self.resolve(scope)


class UnknownKeyGuard:
    """Refuses a request whose API key is not a known one (``clients.unknown_keys: reject``)."""

    def __init__(self, app: ASGIApp, clients: ClientIdentifier) -> None:
        self.app = app
        self.clients = clients

    def admit(self, scope: Scope, ctx: RequestContext) -> bool:
        """Raise ``401 API_KEY_INVALID`` for an unknown key; admit everything else."""
        api_key = self.clients.presented_key(scope)
        if api_key is not None and self.clients.holder(api_key) is None:
            # Neither the key nor its digest is echoed.
            raise ApiKeyInvalid(detail="the API key is not a known one")
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.admit(scope, scope[SCOPE_KEY])
        await self.app(scope, receive, send)


def build_guard(app: ASGIApp, ctx: GuardContext) -> ASGIApp | None:
    """The unknown-key guard when ``clients.unknown_keys`` is ``reject``, else ``None``."""
    if not ctx.clients.rejects_unknown_keys:
        return None
    return UnknownKeyGuard(app, ctx.clients)
