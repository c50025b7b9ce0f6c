"""Which headers cross the gateway, and the forwarding headers it adds (sans-I/O).

Hop-by-hop headers (RFC 9110 section 7.6.1) describe one connection, not the
message, so they are dropped in both directions, together with every header the
``Connection`` header names. The gateway then says who the client was:
``X-Forwarded-For``, ``X-Forwarded-Proto``, ``X-Forwarded-Host`` and RFC 7239
``Forwarded``. Forwarding headers that arrive from a peer outside
``clients.trusted_proxies`` are replaced, never extended, so a client cannot make
the upstream believe a forged address.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

from bastion.asgi import HOP_BY_HOP, Headers

# Request headers the gateway sets itself (the forwarding ones are handled apart).
#: Translation table: 1 for each byte that is not an RFC 9110 ``tchar`` (of a header name or
#: a method), else 0. ``1 in value.translate(NOT_TOKEN)`` finds any in one pass in C.
NOT_TOKEN = bytes(
    0 if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "!#$%&'*+-.^_`|~") else 1 for b in range(256)
)

_REPLACED_UPSTREAM = frozenset({b"host", b"traceparent", b"x-request-id", b"expect", b"content-length"})
_FORWARDING = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"})
# Sent by aiohttp's WebSocket handshake itself.
_WEBSOCKET_HANDSHAKE = frozenset(
    {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol"}
)

# Requests for an injected fault (docs/faults.md): for the gateway alone, whether it takes them or not.
_FAULT_CONTROL = frozenset({b"bastion-fault-delay", b"bastion-fault-abort"})

# Every request header the loop below does more with than pass on (one look-up for the rest).
_SPECIAL = HOP_BY_HOP | _REPLACED_UPSTREAM | _FORWARDING | _FAULT_CONTROL
_SPECIAL_WEBSOCKET = _SPECIAL | _WEBSOCKET_HANDSHAKE

# The forwarding headers of requests without trusted ones, by (peer, scheme, host): one of a
# few per connection, worked out once. Emptied when it reaches this many.
_MAX_FORWARDING_CACHE = 4096

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The header names listed in ``Connection`` headers (lower case), which are hop-by-hop too."""
    names: set[bytes] = set()
    for key, value in headers:
        if key.lower() == b"connection":
            names.update(t.strip().lower() for t in value.split(b",") if t.strip())
    names.discard(b"close")
    names.discard(b"keep-alive")
    return frozenset(names)


def response_headers(raw: Sequence[tuple[bytes, bytes]]) -> Headers:
    """The upstream response's headers as the client should get them (ASGI: lower-case names)."""
    if raw:
        # The usual response, without hop-by-hop headers: every name lowered at once, in C.
        names, values = zip(*raw, strict=True)
        lowered = b"\n".join(names).lower().split(b"\n")
        if len(lowered) == len(raw) and HOP_BY_HOP.isdisjoint(lowered):
            return list(zip(lowered, values, strict=True))
    kept: Headers = []
    listed = False
    for key, value in raw:
        name = key.lower()
        if name in HOP_BY_HOP:
            listed = listed or name == b"connection"
            continue
        kept.append((name, value))
    if listed:
        extra = connection_tokens(raw)
        if extra:
            kept = [(k, v) for k, v in kept if k not in extra]
    return kept


def _forwarded_node(address: str) -> str:
    """An address as an RFC 7239 node: IPv6 in brackets and quotes, an unknown peer obfuscated."""
    if ":" in address:
        return f'"[{address}]"'
    return address or "unknown"


@functools.lru_cache(maxsize=1024)
def _forwarded_value(value: str) -> str:
    """A ``Forwarded`` parameter value: a token when it can be, else a quoted string.

    Cached: it is the request's ``Host``, one of a few values, checked character by
    character on every proxied request otherwise.
    """
    if value and all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class Forwarding:
    """Builds the headers a request carries to the upstream."""

    def __init__(
        self,
        trusted_proxies: Sequence[str] = (),
        *,
        preserve_host: bool = False,
        authorization: str | None = None,
    ) -> None:
        self.trusted: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in trusted_proxies
        )
        self.preserve_host = preserve_host
        #: Sent as ``Authorization`` in place of the client's (credentials of the upstream URL).
        self.authorization = authorization
        extra = frozenset({b"authorization"}) if authorization is not None else frozenset()
        self._special = _SPECIAL | extra
        self._special_websocket = _SPECIAL_WEBSOCKET | extra
        self._added: dict[tuple[str, str, str], tuple[tuple[str, str], ...]] = {}

    def is_trusted(self, address: str) -> bool:
        """Whether ``address`` (the connecting peer) is one of ``clients.trusted_proxies``."""
        if not self.trusted:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.trusted)

    def upstream_headers(
        self,
        headers: Iterable[tuple[bytes, bytes]],
        *,
        peer: str,
        scheme: str,
        traceparent: bytes | None,
        request_id: str | None,
        websocket: bool = False,
    ) -> list[tuple[str, str]]:
        """The request headers for the upstream, as ``str`` pairs in their original order.

        ``peer`` is the connecting address, ``scheme`` the client's scheme (``http`` or
        ``https``); ``traceparent`` and ``request_id`` replace any the client sent.
        """
        out: list[tuple[str, str]] = []
        host = ""
        incoming: dict[bytes, list[bytes]] | None = None
        listed: frozenset[bytes] = frozenset()
        special = self._special_websocket if websocket else self._special
        for key, value in headers:
            if key not in special:
                out.append((key.decode("latin-1"), value.decode("latin-1")))
            elif key in HOP_BY_HOP:
                if key == b"connection":
                    listed = connection_tokens([(key, value)]) | listed
            elif key in _REPLACED_UPSTREAM:
                if key == b"host":
                    host = value.decode("latin-1")
                    if self.preserve_host:
                        out.append(("Host", host))
                elif key == b"content-length" and not websocket:
                    # Kept so the upstream sees the length; the body streams as it arrives.
                    out.append(("Content-Length", value.decode("latin-1")))
            elif key in _FORWARDING:
                if incoming is None:
                    incoming = {}
                incoming.setdefault(key, []).append(value)
            # else a WebSocket handshake header (aiohttp sends its own), the client's
            # Authorization where the gateway sends its own (below), or a fault request
        if listed:
            out = [(k, v) for k, v in out if k.lower().encode("latin-1") not in listed]
        if traceparent is not None:
            out.append(("traceparent", traceparent.decode("ascii")))
        if request_id is not None:
            out.append(("X-Request-ID", request_id))
        if self.authorization is not None:
            out.append(("Authorization", self.authorization))
        if incoming is None or not self.trusted:
            # Nothing to extend: the same headers for every request from this peer to this host.
            added = self._added.get((peer, scheme, host))
            if added is None:
                if len(self._added) >= _MAX_FORWARDING_CACHE:
                    self._added.clear()
                added = self._added[(peer, scheme, host)] = tuple(
                    self._forwarding(None, peer=peer, scheme=scheme, host=host)
                )
            out += added
        else:
            out += self._forwarding(incoming, peer=peer, scheme=scheme, host=host)
        return out

    def _forwarding(
        self, incoming: dict[bytes, list[bytes]] | None, *, peer: str, scheme: str, host: str
    ) -> list[tuple[str, str]]:
        # Only a trusted proxy's headers are extended; anyone else's are dropped.
        chain = incoming if incoming is not None and self.is_trusted(peer) else {}
        xff = ", ".join(v.decode("latin-1") for v in chain.get(b"x-forwarded-for", ()))
        proto = chain.get(b"x-forwarded-proto")
        fwd_host = chain.get(b"x-forwarded-host")
        forwarded = ", ".join(v.decode("latin-1") for v in chain.get(b"forwarded", ()))
        element = f"for={_forwarded_node(peer)};proto={scheme}"
        if host:
            element += f";host={_forwarded_value(host)}"
        added = [
            ("X-Forwarded-For", f"{xff}, {peer}" if xff else peer),
            ("X-Forwarded-Proto", proto[0].decode("latin-1") if proto else scheme),
        ]
        original_host = fwd_host[0].decode("latin-1") if fwd_host else host
        if original_host:
            added.append(("X-Forwarded-Host", original_host))
        added.append(("Forwarded", f"{forwarded}, {element}" if forwarded else element))
        return added
