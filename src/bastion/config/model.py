"""The configuration model: :class:`Config` and the small top-level sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from bastion._model import Section
from bastion.config.admin import AdminConfig, check_admin_store
from bastion.config.check import LintConfig
from bastion.config.clients import ClientsConfig
from bastion.config.faults import FaultsConfig
from bastion.config.gateway import GatewayConfig
from bastion.config.idempotency import IdempotencyConfig
from bastion.config.observability import ObservabilityConfig
from bastion.config.ratelimit import RateLimitsConfig
from bastion.config.validation import ValidationConfig
from bastion.problems.links import DEFAULT_DOCS_URL, ProblemLinks, check_docs_url
from bastion.stores import parse_store_url


class ErrorsConfig(Section):
    """How problems are rendered."""

    type_base: str = "https://bastion.dev/errors/"
    """Prefix of every problem's `type` URI; the code in kebab-case follows it."""
    docs_url: str | None = DEFAULT_DOCS_URL
    """Where each code is documented: every problem carries `Link: <URL>; rel="describedby"`
    with this template filled in. Placeholders: `{code}` (`IDEMPOTENCY_KEY_REUSED`), `{slug}`
    (`idempotency-key-reused`, the anchor of the code in docs/errors.md and in the reference
    `bastion errors docs` writes) and `{type_base}`. The result must be a URI reference (no
    spaces, quotes, braces or angle brackets once filled in). `null`: no link."""
    normalize_upstream: bool | Literal["all"] = True
    """Replace an error response whose body is not a problem (an HTML error page, a stack
    trace) with a problem of the same status and the trace id; the original body (up to
    64 KiB, or `gateway.normalize_max_bytes`) is logged, never sent. Applies to the upstream
    (gateway) and to the application's own responses (middleware). `true`: 5xx; `all`: 4xx
    and 5xx; `false`: none."""
    framework_adapters: bool = True
    """When bastion wraps a Starlette or FastAPI app directly, render its `HTTPException` and
    `RequestValidationError` as problems (without echoing input values)."""

    @field_validator("docs_url")
    @classmethod
    def _docs_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        type_base = info.data.get("type_base")
        return check_docs_url(value, type_base if isinstance(type_base, str) else "")

    def problem_links(self) -> ProblemLinks:
        """``type_base`` and ``docs_url`` ready for rendering: build once, pass as ``type_base``."""
        return ProblemLinks(self.type_base, self.docs_url)


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
    """The default store for idempotency records, rate limit counters and admin changes:
    `memory://`, `sqlite:///PATH`, `redis://HOST:PORT/DB`, `redis+cluster://HOST:PORT` (a Redis
    Cluster, any node) or `postgresql://USER@HOST/DB`."""
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
    admin: AdminConfig = Field(default_factory=AdminConfig)
    faults: FaultsConfig = Field(default_factory=FaultsConfig)

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        parse_store_url(value)
        return value

    @model_validator(mode="after")
    def _client_limits_name_rules(self) -> Config:
        problems = _client_limit_problems(self)
        if problems:
            raise ValidationError.from_exception_data("Config", problems)
        return self

    @field_validator("upstream")
    @classmethod
    def _upstream_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _admin_store(self) -> Config:
        if self.admin.listen is not None and self.admin.store is None:
            try:
                check_admin_store(self.store)
            except ValueError as exc:
                raise ValueError(f"admin.store: unset, it is the top-level store, and {exc}") from None
        return self

    def admin_store(self) -> str:
        """The store that keeps admin changes (``admin.store``, else the top-level ``store``)."""
        return self.admin.store or self.store


def _client_limit_problems(config: Config) -> list[InitErrorDetails]:
    """Each ``clients.keys[i].limits`` entry that names no rule, or that no request would fit."""
    rules = {rule.name: rule for rule in config.rate_limits.rules}
    problems: list[InitErrorDetails] = []
    for i, key in enumerate(config.clients.keys or ()):
        for name, rate in key.limits.items():
            rule = rules.get(name)
            if rule is None:
                known = ", ".join(sorted(rules)) or "none"
                reason = f"no rate limit rule is named {name!r} (rules: {known})"
            elif rule.cost > rule.capacity_of(rate):
                reason = f"cost {rule.cost} exceeds the capacity {rule.capacity_of(rate)} of {rate}"
            else:
                continue
            problems.append(
                InitErrorDetails(
                    type=PydanticCustomError("value_error", "{reason}", {"reason": reason}),
                    loc=("clients", "keys", i, "limits", name),
                    input=str(rate),
                )
            )
    return problems


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` holds ``(key path, reason)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "configuration") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  {path}: {reason}" for path, reason in problems)
        super().__init__(f"{source} has {len(problems)} problem(s):\n{lines}")
