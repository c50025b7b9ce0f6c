"""Store URLs: which kind of store a URL names, checked the same way for every capability."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

StoreKind = Literal["memory", "sqlite", "redis", "postgres"]

_SCHEMES: dict[str, StoreKind] = {
    "memory": "memory",
    "sqlite": "sqlite",
    "redis": "redis",
    "rediss": "redis",
    "redis+cluster": "redis",
    "rediss+cluster": "redis",
    "unix": "redis",
    "postgresql": "postgres",
    "postgres": "postgres",
}


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed store URL: which kind of store, and the URL to hand its driver."""

    kind: StoreKind
    url: str
    path: str = ""

    @property
    def redacted(self) -> str:
        """The URL without its password, for logs and metrics labels."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()


def parse_store_url(url: str) -> StoreURL:
    """Parse and check a store URL; raises :class:`ValueError` naming what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(
            f"{url!r} is not a store URL; use memory://, sqlite:///PATH, "
            "redis://HOST:PORT/DB, redis+cluster://HOST:PORT or postgresql://HOST/DB"
        )
    kind = _SCHEMES.get(scheme.lower())
    if kind is None:
        raise ValueError(f"unknown store scheme {scheme!r}; use memory, sqlite, redis or postgresql")
    if kind == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ValueError(f"{url!r}: a SQLite URL is sqlite:///relative.db or sqlite:////abs.db")
        path = rest[1:]
        return StoreURL(kind, url, path)
    if kind in ("redis", "postgres") and not rest and scheme != "unix":
        raise ValueError(f"{url!r} names no host")
    if scheme.lower().endswith("+cluster") and urlsplit(url).path.strip("/") not in ("", "0"):
        raise ValueError(f"{url!r}: a Redis Cluster has database 0 only")
    return StoreURL(kind, url)
