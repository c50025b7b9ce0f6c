"""Whose key it is: the caller part of a record's scope.

An idempotency key is scoped to the identified client (``clients.identify``) and to
the caller's credentials: two users behind one address who happen to send the same
key (a counter, a timestamp, a UUID generator seeded alike) each get their own
record, never each other's response. The credentials are the request headers named
in ``idempotency.scope_headers``; for ``Cookie`` either the whole header or only the
cookies named in ``idempotency.scope_cookies``. They are hashed with HMAC-SHA-256
under a per-deployment secret, so the store never holds anything a guessed password
or token could be checked against without that secret.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from bastion.config.idempotency import IdempotencyConfig

_BLOCK = 64  # SHA-256's block size, in bytes (RFC 2104's B)


def default_secret(store_url: str, config: IdempotencyConfig) -> bytes:
    """The secret used when ``scope_secret`` is unset: the same in every process sharing the store.

    Derived from what those processes already share (the store's URL, table and key
    prefix), never drawn at random per process, which would give each process records
    of its own.
    """
    text = f"bastion-idempotency-scope\0{store_url}\0{config.table}\0{config.key_prefix}"
    return hashlib.sha256(text.encode()).digest()


class CallerScope:
    """Works out the caller part of a request's record key."""

    __slots__ = ("_inner", "_outer", "cookies", "names")

    def __init__(self, config: IdempotencyConfig, secret: bytes) -> None:
        # HMAC-SHA-256 (RFC 2104) with the keyed inner and outer states worked out once:
        # a request copies them. (About 1.1 µs a request against 2.3 µs for hmac.new and
        # 2.5 µs for copying a keyed hmac object, on 60 bytes with CPython 3.11; the
        # test in tests/security/test_idempotency.py checks it against hmac.new.)
        key = hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        #: The header names, lower-case.
        self.names = frozenset(name.lower().encode("latin-1") for name in config.scope_headers)
        #: Session cookie names (``None``: the whole ``Cookie`` header counts).
        self.cookies = frozenset(c.encode("latin-1") for c in config.scope_cookies) or None

    @classmethod
    def from_config(cls, config: IdempotencyConfig, store_url: str) -> CallerScope:
        """The scope ``config`` describes for a store at ``store_url``."""
        configured = config.scope_secret
        if configured is not None:
            secret = configured.get_secret_value().encode()
        else:
            secret = default_secret(store_url, config)
        return cls(config, secret)

    def of(self, headers: Sequence[tuple[bytes, bytes]]) -> str:
        """The caller part for a request with ``headers``; ``""`` without any credential header."""
        names = self.names
        # ASGI servers give lower-case header names.
        values = [name + b":" + value for name, value in headers if name in names]
        if not values:
            return ""
        if self.cookies is not None:
            values = [b"cookie:" + self._session_cookies(v[7:]) if v[:7] == b"cookie:" else v for v in values]
        inner = self._inner.copy()
        # Length-prefixed, so that no two lists of values read alike.
        inner.update(b"".join(b"%d;%b" % (len(v), v) for v in values))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def _session_cookies(self, header: bytes) -> bytes:
        """The session cookies (``name=value``) of one ``Cookie`` header, sorted, as one value."""
        wanted = self.cookies or frozenset()
        pairs = (part.strip() for part in bytes(header).split(b";"))
        return b"; ".join(sorted(p for p in pairs if p.partition(b"=")[0].strip() in wanted))
