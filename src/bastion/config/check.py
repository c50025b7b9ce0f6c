"""The ``lint`` configuration section: which rules run and which severity fails a run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from bastion._model import Section

#: Severities from the most to the least serious.
Severity = Literal["error", "warning", "info"]


class LintConfig(Section):
    """How ``bastion lint`` judges a description."""

    disable: list[str] = Field(default_factory=list)
    """Lint rule ids that do not run (see docs/checker.md); an unknown id is an error."""
    fail_on: Severity = "error"
    """The lowest finding severity that makes `bastion lint` exit 1; `--fail-on` overrides it."""

    @field_validator("disable")
    @classmethod
    def _known_rules(cls, value: list[str]) -> list[str]:
        from bastion.catalog import RULES

        for rule_id in value:
            if rule_id not in RULES:
                known = ", ".join(sorted(RULES))
                raise ValueError(f"{rule_id!r} is not a lint rule; known rules: {known}")
        return value
