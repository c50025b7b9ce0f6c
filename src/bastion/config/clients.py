"""The ``clients`` section: who sent a request, and the API keys bastion knows."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from bastion._model import Section
from bastion.units import RateField

_DIGEST_HINT = (
    "is not a SHA-256 digest (64 hex characters); put the key's digest here, never the key "
    "itself: `bastion keys hash KEY` prints it"
)
_KEY_NAME = re.compile(r"[A-Za-z0-9._:@-]{1,64}")


class ApiKey(Section):
    """One known API key: the SHA-256 digest of the key, and the client it names."""

    sha256: str
    """The key's SHA-256 digest in hex (`bastion keys hash KEY`); the key itself never appears."""
    name: str | None = None
    """The client's name in logs, metrics and store keys (unset: the digest's first 16 characters).
    Keys with the same name are one client (two keys during a rotation share its limits)."""
    tier: str | None = None
    """The client's tier (unset: `clients.default_tier`)."""
    limits: dict[str, RateField] = Field(default_factory=dict)
    """Per-rule limits for this client, replacing its tier's limit for the rules named
    (`{per-client: 5000/minute}`); each keeps its rule's burst-to-limit proportion."""

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        digest = value.strip().lower()
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            # The value itself is not repeated: it may be a raw key pasted by mistake.
            raise ValueError(f"the value {_DIGEST_HINT}")
        return digest

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _KEY_NAME.fullmatch(value):
            raise ValueError("a key name is 1 to 64 letters, digits or . _ : @ -")
        return value


def read_keys_file(path: str) -> tuple[ApiKey, ...]:
    """The keys of a ``clients.keys_file``: a line per key, ``DIGEST [NAME [TIER]]``, ``#`` comments."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"keys_file: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 3:
            raise ValueError(f"keys_file line {number}: expected DIGEST [NAME [TIER]]")
        try:
            keys.append(ApiKey(**dict(zip(("sha256", "name", "tier"), fields, strict=False))))
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise ValueError(f"keys_file line {number}: {reason}") from None
    return tuple(keys)


class ClientsConfig(Section):
    """How a request's client is identified and which tier it belongs to."""

    identify: list[str] = Field(default_factory=lambda: ["header:X-API-Key", "ip"])
    """Where a client's identity comes from, in order: `header:NAME` (an API key header) or `ip`.
    The first one present names the client; API keys are only ever kept as a SHA-256 digest."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses or networks (`127.0.0.1/32`, `10.0.0.0/8`) whose `X-Forwarded-For` and
    `Forwarded` headers are believed. From any other peer those headers are ignored."""
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    """The one header your trusted proxies set (`x-forwarded-for` or RFC 7239 `forwarded`); the
    other is ignored, so a client cannot slip a forged entry past a proxy that leaves it alone."""
    keys: list[ApiKey] | None = None
    """Known API keys as SHA-256 digests, never raw: `{sha256: DIGEST, name: acme, tier: paid}`
    or a bare digest. Unset (and no `keys_file`), any key is believed, and a request that names
    its client by a key is also counted per IP by `key: client` rules."""
    keys_file: str | None = None
    """A file of known keys, relative to this file: one `DIGEST [NAME [TIER]]` per line, `#`
    starts a comment. Read with the rest of the configuration; it adds to `keys`."""
    unknown_keys: Literal["anonymous", "reject"] = "anonymous"
    """With known keys listed, what a key not among them gets: `anonymous` (the client is
    identified by its IP, in `default_tier`) or `reject` (`401 API_KEY_INVALID`)."""
    default_tier: str = "free"
    """The tier of known keys without one, and of clients identified by IP."""

    _file_keys: tuple[ApiKey, ...] = PrivateAttr(default=())

    @model_validator(mode="before")
    @classmethod
    def _no_raw_key_tiers(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tiers" in data:
            # The old mapping held raw keys in the file; refused rather than ignored so the
            # tiers it gave are not lost silently.
            raise ValueError(
                "tiers (raw API key to tier) is no longer read: raw keys do not belong in a "
                "configuration. List each key's SHA-256 digest under clients.keys with its tier, "
                "e.g. {sha256: DIGEST, name: acme, tier: paid}; `bastion keys hash KEY` prints the digest"
            )
        return data

    @field_validator("keys", mode="before")
    @classmethod
    def _bare_digests(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"sha256": entry} if isinstance(entry, str) else entry for entry in value]
        return value

    @field_validator("identify")
    @classmethod
    def _known_sources(cls, value: list[str]) -> list[str]:
        for source in value:
            if source == "ip" or (source.startswith("header:") and len(source) > 7):
                continue
            raise ValueError(f"{source!r} is not a client source; use header:NAME or ip")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return value

    @model_validator(mode="after")
    def _read_keys_file(self) -> ClientsConfig:
        if self.keys_file is not None:
            self._file_keys = read_keys_file(self.keys_file)
        digests = [key.sha256 for key in self.known_keys() or ()]
        if len(set(digests)) != len(digests):
            raise ValueError("keys: the same digest is listed twice")
        return self

    def known_keys(self) -> tuple[ApiKey, ...] | None:
        """``keys`` and the ``keys_file`` together; ``None`` when neither is set (any key is believed)."""
        if self.keys is None and self.keys_file is None:
            return None
        return (*(self.keys or ()), *self._file_keys)
