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
    path: str = "/_bastion/dashboard"
    token: str | None = Field(default=None, min_length=16)
    allow_remote: bool = False
    refresh: DurationField = Duration(2000)

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
    service_name: str = "bastion"
    #: ``global`` uses the tracer provider the application configured (the usual way);
    #: ``console`` makes bastion's own provider that prints spans (for trying it out).
    exporter: Literal["global", "console"] = "global"


class ObservabilityConfig(Section):
    """The dashboard and tracing."""

    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    otel: OtelConfig = Field(default_factory=OtelConfig)
