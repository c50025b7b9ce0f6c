"""Validation modes: which operations enforce, for which clients, and which refusals may be shadowed.

``validation.mode`` and ``validation.enforce_percent`` set every operation's mode; an
operation's ``x-bastion-validation: {mode: shadow}`` (or ``{enforce_percent: 20}``)
replaces that setting for the operation, as a whole: keys it leaves out take their
defaults (``enforce``, every client), not the global values.

Only refusals about what the request *means* are shadowed: ``422 VALIDATION_FAILED``
and the ``415`` of a ``Content-Type`` the operation does not declare. A request that
bastion cannot read as one document is refused in every mode (:func:`shadowable`),
since the application might read it differently than it was checked, or not survive
reading it: ``413 PAYLOAD_TOO_LARGE``, ``400 MALFORMED_BODY`` (bad UTF-8, repeated JSON
member names, nesting too deep, broken compression), ``400 AMBIGUOUS_REQUEST``, and the
``415`` of a charset other than UTF-8 or of an unknown ``Content-Encoding``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from bastion._model import Section
from bastion.config.ratelimit import check_enforcement
from bastion.enforcement import enforced_share, error_reason
from bastion.problems import Problem, UnsupportedMediaType
from bastion.protocols import CompiledDescription
from bastion.validation.operation import CompiledOperation

#: The operation extension that sets its validation mode.
EXTENSION = "x-bastion-validation"


class OperationMode(Section):
    """The value of ``x-bastion-validation``: one operation's validation mode."""

    mode: Literal["enforce", "shadow"] = "enforce"
    """`enforce` or `shadow`, as `validation.mode`."""
    enforce_percent: int | None = Field(default=None, ge=0, le=100)
    """The share of clients enforced, as `validation.enforce_percent`."""

    @model_validator(mode="after")
    def _enforcement(self) -> OperationMode:
        check_enforcement(self.mode, self.enforce_percent)
        return self


def operation_shares(
    description: CompiledDescription | None,
) -> tuple[dict[tuple[str, str], int], list[tuple[str, str]]]:
    """The enforced share of each operation with ``x-bastion-validation``, by ``(METHOD, template)``.

    Also every bad value, as ``(where, reason)`` (``paths./x.post.x-bastion-validation``).
    """
    shares: dict[tuple[str, str], int] = {}
    problems: list[tuple[str, str]] = []
    for operation in description.operations if description is not None else ():
        value: Any = operation.extensions.get(EXTENSION)
        if value is None:
            continue
        try:
            setting = OperationMode.model_validate(value)
        except ValueError as exc:
            where = f"paths.{operation.template}.{operation.method.lower()}.{EXTENSION}"
            problems.append((where, error_reason(exc)))
            continue
        shares[(operation.method, operation.template)] = enforced_share(setting.mode, setting.enforce_percent)
    return shares, problems


def shadowable(
    problem: Problem, operation: CompiledOperation, body: bytes | None, content_type: bytes | None
) -> bool:
    """Whether a refusal of the operation's checks may be shadowed (see the module's docstring).

    A ``415`` is shadowed only when the operation itself declares no media type for the
    ``Content-Type``: asked again, the operation refuses it. Otherwise it came from the
    charset, which stays enforced.
    """
    if not isinstance(problem, UnsupportedMediaType):
        return False
    try:
        operation.select_media(content_type, not body)
    except UnsupportedMediaType:
        return True
    return False
