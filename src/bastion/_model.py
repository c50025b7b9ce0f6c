"""The base class of every configuration section: strict, immutable, no unknown keys."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A configuration section. Unknown keys are errors: a silently ignored typo is a pitfall."""

    # Attribute docstrings become field descriptions: docs/configuration.md is built from them.
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True
    )
