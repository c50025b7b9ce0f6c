"""The ``observability`` configuration section: the live dashboard and OpenTelemetry tracing.

Prometheus exposition itself stays under ``metrics`` (``enabled``, ``path``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from bastion._model import Section
from bastion.units import Duration, DurationField


class DashboardConfig(Section):
    """The live dashboard bastion serves itself (off by default).

    Only loopback clients may open it unless ``allow_remote`` is set, which needs a
    ``token``; with a token, every request must carry it (``Authorization: Bearer``
    or ``?token=``).
    """

    enabled: bool = False
    """Serve the live dashboard (request rates, problems, rate limits, idempotency and
    validation counts) at `path`."""
    path: str = "/_bastion/dashboard"
    """Where the dashboard page is served; its data endpoint is `{path}/data`. Starts with `/`
    and does not end with one."""
    token: str | None = Field(default=None, min_length=16)
    """A secret of at least 16 characters; when set, every page and data request must carry it
    (`Authorization: Bearer` or `?token=`), else `401`."""
    allow_remote: bool = False
    """`true` opens the dashboard to non-loopback clients (needs a `token`). By default only loopback
    clients that send no forwarding headers may open it; others get `404`."""
    refresh: DurationField = Duration(2000)
    """How often the page polls its data, from `500ms` to `60s`."""

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or value.endswith("/") or "?" in value:
            raise ValueError("the dashboard path must start with / and not end with /")
        return value

    @field_validator("refresh")
    @classmethod
    def _sane_refresh(cls, value: Duration) -> Duration:
        if not 500 <= value.ms <= 60_000:
            raise ValueError("refresh must be between 500ms and 60s")
        return value

    @model_validator(mode="after")
    def _remote_needs_token(self) -> DashboardConfig:
        if self.allow_remote and self.token is None:
            raise ValueError("allow_remote needs a token, or the dashboard would be open to anyone")
        return self


class OtelConfig(Section):
    """OpenTelemetry tracing: a server span per request (needs the ``otel`` extra)."""

    enabled: bool = False
    """Start an OpenTelemetry `SERVER` span for every request. Needs the `otel` extra; without
    it a warning is logged and tracing stays off."""
    service_name: str = "bastion"
    """The `service.name` of the provider the `console` exporter makes; with `global`, your
    application's provider names the service."""
    exporter: Literal["global", "console"] = "global"
    """`global` uses the tracer provider the application configured (the usual way);
    `console` makes bastion's own provider that prints spans (for trying it out)."""


class ObservabilityConfig(Section):
    """The dashboard and tracing."""

    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    otel: OtelConfig = Field(default_factory=OtelConfig)
