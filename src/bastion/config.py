"""The configuration model: a YAML file, a dict or a :class:`Config`, plus the environment.

Every value can also come from an environment variable: ``BASTION_`` followed by
the key path in upper case with ``__`` between levels (``BASTION_STORE``,
``BASTION_RATE_LIMITS__ON_STORE_ERROR``). Environment values are parsed as YAML
scalars, so ``BASTION_VALIDATION__MAX_BODY_BYTES=2048`` is a number.

A bad configuration raises :class:`ConfigError`, which lists every problem with
its key path and the reason; nothing starts with a configuration that has one.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from bastion._model import Section
from bastion.check.config import LintConfig
from bastion.gateway.config import GatewayConfig
from bastion.idempotency.config import IdempotencyConfig
from bastion.observability.config import ObservabilityConfig
from bastion.ratelimit.config import RateLimitsConfig
from bastion.stores import parse_store_url
from bastion.validation.config import ValidationConfig

ENV_PREFIX = "BASTION_"
# Environment variables that share the prefix but are not configuration keys.
_ENV_NOT_CONFIG = ("BASTION_TEST_", "BASTION_CONFIG")


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


class ErrorsConfig(Section):
    """How problems are rendered."""

    type_base: str = "https://bastion.dev/errors/"
    """Prefix of every problem's `type` URI; the code in kebab-case follows it."""
    normalize_upstream: bool | Literal["all"] = True
    """Replace an error response whose body is not a problem (an HTML error page, a stack
    trace) with a problem of the same status and the trace id; the original body (up to
    64 KiB, or `gateway.normalize_max_bytes`) is logged, never sent. Applies to the upstream
    (gateway) and to the application's own responses (middleware). `true`: 5xx; `all`: 4xx
    and 5xx; `false`: none."""
    framework_adapters: bool = True
    """When bastion wraps a Starlette or FastAPI app directly, render its `HTTPException` and
    `RequestValidationError` as problems (without echoing input values)."""


class MetricsConfig(Section):
    """Prometheus metrics exposition."""

    enabled: bool = True
    """Collect Prometheus metrics and serve them at `path`."""
    path: str = "/metrics"
    """Where the Prometheus exposition is served (GET or HEAD)."""

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("the metrics path must start with /")
        return value


class LoggingConfig(Section):
    """Structured JSON logs."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    """The lowest level of log lines written (JSON lines on standard error)."""
    access: bool = True
    """Write one access line per request: method, path, route, status, duration, client,
    trace id and what the guards decided."""


class RoutingConfig(Section):
    """How request paths are matched and which request targets are served."""

    case_sensitive: bool = False
    """Whether rate limit `match` entries and `idempotency.require` compare paths with their case:
    by default `POST /login` also covers `/LOGIN` (a protective rule that covers a little more is
    safe; one that covers less is a way around it). Routing against the OpenAPI description is
    case-sensitive either way."""
    strict_slashes: bool = False
    """Whether rate limit `match` entries and `idempotency.require` tell `/login/` from `/login`:
    by default a trailing slash is ignored when matching them."""
    allow_trace: bool = False
    """Gateway: forward `TRACE` requests upstream. By default they are answered with
    `405 METHOD_NOT_ALLOWED` (a `TRACE` echoes the request's headers, credentials included)."""


class Config(Section):
    """The whole bastion configuration. Build it with :func:`load_config`."""

    upstream: str | None = None
    """Gateway mode: the base URL of the API bastion proxies to (`http://127.0.0.1:3000`).
    Credentials in it (`http://user:password@host:port`) are sent to the upstream as
    `Authorization: Basic`, in place of any `Authorization` header a client sent, and are
    never shown in the gateway's logs, problem responses or trace spans."""
    openapi: str | None = None
    """Path of the OpenAPI 3.0/3.1 description (YAML or JSON), relative to this file. It gives
    routes, validation and per-operation `x-bastion-*` settings."""
    store: str = "sqlite:///./bastion.db"
    """The default store for idempotency records and rate limit counters: `memory://`,
    `sqlite:///PATH`, `redis://HOST:PORT/DB` or `postgresql://USER@HOST/DB`."""
    clients: ClientsConfig = Field(default_factory=ClientsConfig)
    errors: ErrorsConfig = Field(default_factory=ErrorsConfig)
    rate_limits: RateLimitsConfig = Field(default_factory=RateLimitsConfig)
    idempotency: IdempotencyConfig = Field(default_factory=IdempotencyConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    lint: LintConfig = Field(default_factory=LintConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        parse_store_url(value)
        return value

    @field_validator("upstream")
    @classmethod
    def _upstream_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/") if value else value


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` holds ``(key path, reason)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "configuration") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  {path}: {reason}" for path, reason in problems)
        super().__init__(f"{source} has {len(problems)} problem(s):\n{lines}")


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_at(path: tuple[int | str, ...]) -> type[Section] | None:
    """The section model that owns the key at ``path`` (to suggest valid keys)."""
    model: Any = Config
    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return None
        annotation = field.annotation
        inner = getattr(annotation, "__args__", None)
        candidates = [annotation, *(inner or ())]
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, Section)),
            None,
        )
        if model is None:
            inner_lists = [getattr(c, "__args__", ()) for c in candidates]
            model = next(
                (a for args in inner_lists for a in args if isinstance(a, type) and issubclass(a, Section)),
                None,
            )
            if model is None:
                return None
    return model if isinstance(model, type) else None


def _problems_from(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        # pydantic adds the validator function's name for before-validators; drop it.
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        path = ".".join(str(p) for p in loc) or "(top level)"
        if error["type"] == "extra_forbidden":
            owner = _model_at(loc[:-1])
            options = list(owner.model_fields) if owner else []
            reason = "unknown key" + _did_you_mean(str(loc[-1]), options)
            if options:
                reason += f"; valid keys here: {', '.join(options)}"
        else:
            reason = error["msg"].removeprefix("Value error, ")
        problems.append((path, reason))
    return problems


def _env_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    overrides: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name.startswith(_ENV_NOT_CONFIG):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            problems.append((name, "empty key segment in the variable name"))
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        target = overrides
        for part in parts[:-1]:
            node = target.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append((name, f"{part} is set both as a value and as a section"))
                break
            target = node
        else:
            target[parts[-1]] = value
    return overrides, problems


def _named_by_environment(problems: list[tuple[str, str]], env: Mapping[str, str]) -> list[tuple[str, str]]:
    """Problems whose key came from an environment variable name that variable too."""
    sources = {
        ".".join(p.lower() for p in name[len(ENV_PREFIX) :].split("__")): name
        for name in env
        if name.startswith(ENV_PREFIX) and not name.startswith(_ENV_NOT_CONFIG)
    }
    named: list[tuple[str, str]] = []
    for path, reason in problems:
        source = next((v for k, v in sources.items() if path == k or path.startswith(k + ".")), None)
        named.append((path, f"{reason} (set by the environment variable {source})" if source else reason))
    return named


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            merged[key] = _merge(current, value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML configuration file into a dictionary, with errors naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("(file)", f"cannot read {path}: {exc.strerror}")], str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([(where, f"not valid YAML: {reason}")], str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([("(top level)", "must be a mapping of keys")], str(path))
    return data


def load_config(
    source: Config | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Build a :class:`Config` from a file path, a mapping or a ``Config``, plus the environment.

    Relative paths in the file (``openapi``, ``sqlite:///./x.db``) are taken relative
    to the file's folder. ``env`` defaults to ``os.environ``; pass ``{}`` to ignore it.
    """
    environment = os.environ if env is None else env
    origin = "configuration"
    base_dir: Path | None = None
    if isinstance(source, Config):
        data: dict[str, Any] = source.model_dump(mode="json", exclude_unset=True)
    elif source is None:
        data = {}
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        path = Path(source)
        origin = str(path)
        base_dir = path.resolve().parent
        data = read_yaml(path)
    overrides, problems = _env_overrides(environment)
    data = _merge(data, overrides)
    if base_dir is not None:
        data = _resolve_paths(data, base_dir)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems.extend(_named_by_environment(_problems_from(exc), environment))
        config = None
    if problems or config is None:
        raise ConfigError(problems, origin)
    return config


def _resolve_paths(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    resolved = dict(data)
    spec = resolved.get("openapi")
    if isinstance(spec, str) and not Path(spec).is_absolute():
        resolved["openapi"] = str(base_dir / spec)
    clients = resolved.get("clients")
    keys_file = clients.get("keys_file") if isinstance(clients, dict) else None
    if isinstance(clients, dict) and isinstance(keys_file, str) and not Path(keys_file).is_absolute():
        resolved["clients"] = {**clients, "keys_file": str(base_dir / keys_file)}
    for section in (resolved, resolved.get("idempotency"), resolved.get("rate_limits")):
        if isinstance(section, dict):
            url = section.get("store")
            if isinstance(url, str) and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
                section["store"] = "sqlite:///" + str(base_dir / url[len("sqlite:///") :])
    return resolved


def check_file(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Every problem of a configuration file (and the environment), empty when it is good."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        return exc.problems
    from bastion.validation.openapi import OpenAPIError

    try:
        check_description(config)
    except OpenAPIError as exc:
        return [("openapi", str(exc))]
    return []


def check_description(config: Config) -> None:
    """Load and compile ``config``'s OpenAPI description as the guards will, or raise ``OpenAPIError``.

    So that a description the gateway or the middleware would refuse is refused before
    anything starts (``config check``, the gateway before it listens).
    """
    if config.openapi is None:
        return
    from bastion.validation.compile import compile_description
    from bastion.validation.openapi import load_description

    compile_description(load_description(config.openapi, config.validation.allow_external_refs), config)
