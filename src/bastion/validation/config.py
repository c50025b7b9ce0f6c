"""The ``validation`` configuration section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bastion._model import Section
from bastion.units import ByteSize


class ResponseValidationConfig(Section):
    """Response validation in shadow mode: mismatches are logged and counted, never altered."""

    enabled: bool = False
    sample_rate: float = Field(default=0.01, ge=0.0, le=1.0)


class ValidationConfig(Section):
    """How requests are checked against the OpenAPI description."""

    enabled: bool = True
    reject_unknown_fields: bool = True
    max_body_bytes: ByteSize = 1024 * 1024
    max_json_depth: int = Field(default=32, ge=1, le=1000)
    max_errors: int = Field(default=50, ge=1, le=1000)
    unknown_routes: Literal["reject", "pass"] = "reject"
    unknown_query: Literal["ignore", "reject"] = "ignore"
    lenient_booleans: bool = False
    responses: ResponseValidationConfig = Field(default_factory=ResponseValidationConfig)
