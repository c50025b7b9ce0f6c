"""The ``admin`` configuration section: the admin API, where live changes are made and kept."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from bastion._model import Section
from bastion.stores import parse_store_url
from bastion.units import Duration, DurationField

#: Where the admin API listens when ``listen`` gives only a port.
DEFAULT_ADMIN_HOST = "127.0.0.1"


def split_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9181"``, ``"[::1]:9181"`` or ``"9181"`` as ``(host, port)``."""
    text = value.strip()
    host, colon, port = text.rpartition(":")
    if not colon:
        host, port = DEFAULT_ADMIN_HOST, text
    host = host.strip("[]") or DEFAULT_ADMIN_HOST
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT or PORT (a port from 1 to 65535)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost`` counts)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_tokens(path: str) -> dict[str, str]:
    """The tokens of an ``admin.token_file``: ``token -> who``, a line per token, ``#`` comments.

    A line is ``TOKEN`` or ``NAME TOKEN``; the name is who the audit lines say made a
    change (``admin`` for a bare token). A token is at least 32 characters.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 2:
            raise ValueError(f"line {number}: expected TOKEN or NAME TOKEN")
        name, token = (fields[0], fields[1]) if len(fields) == 2 else ("admin", fields[0])
        if len(token) < 32:
            # The token itself is not repeated: the message may reach a log.
            raise ValueError(
                f"line {number}: a token must be at least 32 characters (`openssl rand -hex 32`)"
            )
        tokens[token] = name
    if not tokens:
        raise ValueError(f"{path} holds no token")
    return tokens


class AdminConfig(Section):
    """The admin API: read the effective configuration, change rate limit rules and consumers live."""

    listen: str | None = None
    """Where the admin API listens: `HOST:PORT`, or a port alone for `127.0.0.1:PORT`. Unset, there is
    no admin API. It never shares the traffic port; every worker process serves it (`SO_REUSEPORT`)."""
    token_file: str | None = None
    """A file of bearer tokens, relative to this file: one `TOKEN` or `NAME TOKEN` per line (at least 32
    characters each; `#` starts a comment). When set, every admin request needs
    `Authorization: Bearer TOKEN`, and the audit line names the token's `NAME`. Required when `listen`
    is not a loopback address."""
    store: str | None = Field(default=None, description="overrides the top-level store")
    """Where changes made through the admin API are kept: `sqlite:///PATH`, `redis://HOST:PORT/DB` or
    `postgresql://USER@HOST/DB` (unset: the top-level `store`). Every worker and every host that shares
    it applies the same changes; they survive a restart. `memory://` cannot keep them."""
    poll_interval: DurationField = Duration(500)
    """How often each worker asks the store whether a change was made elsewhere (another worker or
    host); a change applies everywhere within this plus the time to rebuild the configuration."""
    key_prefix: str = Field(default="bastion:admin", min_length=1, max_length=100)
    """Redis: the prefix of the two keys that hold the changes. PostgreSQL and SQLite: the tables are
    `bastion_admin_changes` and `bastion_admin_version`."""

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            split_listen(value)
        return value

    @field_validator("store")
    @classmethod
    def _store(cls, value: str | None) -> str | None:
        if value is not None:
            check_admin_store(value)
        return value

    @field_validator("poll_interval")
    @classmethod
    def _poll(cls, value: Duration) -> Duration:
        if not 50 <= value.ms <= 10_000:
            raise ValueError("poll_interval must be between 50ms and 10s")
        return value

    @model_validator(mode="after")
    def _token_off_loopback(self) -> AdminConfig:
        if self.listen is not None:
            host, _ = split_listen(self.listen)
            if not is_loopback(host) and self.token_file is None:
                raise ValueError(
                    f"listen {self.listen!r} is not a loopback address: set token_file, or anyone who "
                    "reaches that address could change the limits"
                )
        if self.token_file is not None:
            read_tokens(self.token_file)
        return self


def check_admin_store(url: str) -> str:
    """Refuse a store URL that cannot keep admin changes; returns the URL."""
    kind = parse_store_url(url).kind
    if kind == "memory":
        raise ValueError(
            "memory:// cannot keep admin changes (they must survive a restart and reach every worker); "
            "use sqlite:///PATH, redis://HOST:PORT/DB or postgresql://USER@HOST/DB"
        )
    return url
