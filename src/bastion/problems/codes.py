"""The error-code registry: every problem and field code, what it means, what a client should do.

``docs/errors.md`` is generated from it (``python -m bastion.errordocs``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The module a code registered without one is filed under: the package users import from.
_DEFAULT_MODULE = "bastion.problems"


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One entry of the error-code registry: what a code means and what a client should do."""

    code: str
    status: int
    title: str
    meaning: str
    action: str
    module: str = _DEFAULT_MODULE


_REGISTRY: dict[str, ErrorCode] = {}


def register_code(
    code: str, status: int, title: str, meaning: str, action: str, module: str = _DEFAULT_MODULE
) -> ErrorCode:
    """Add a code to the registry that ``docs/errors.md`` is generated from.

    Registering the same code twice with different content is a programming error.
    """
    entry = ErrorCode(code, status, title, meaning, action, module)
    existing = _REGISTRY.get(code)
    if existing is not None and existing != entry:
        raise ValueError(f"error code {code} registered twice with different content")
    _REGISTRY[code] = entry
    return entry


def error_codes() -> list[ErrorCode]:
    """Every registered problem code, sorted by status then code."""
    return sorted(_REGISTRY.values(), key=lambda e: (e.status, e.code))


def error_code(code: str) -> ErrorCode:
    """The registry entry of ``code`` (a ``KeyError`` when it was never registered)."""
    return _REGISTRY[code]


def type_uri(type_base: str, code: str) -> str:
    """The problem ``type`` for ``code``: ``type_base`` plus the code in kebab-case."""
    return type_base + code.lower().replace("_", "-")


_CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


def is_problem_code(code: str) -> bool:
    """Whether ``code`` is a valid problem code: UPPER_SNAKE_CASE, at most 64 characters."""
    return _CODE_RE.match(code) is not None


# Codes of the entries in a problem's errors[] (field level). They are documented
# with the problem codes so a client author finds every code in one place.
FIELD_CODES: dict[str, str] = {
    "REQUIRED": "A required field or parameter is missing.",
    "TYPE_MISMATCH": "The value has the wrong type (for example a string where a number is due).",
    "INVALID_FORMAT": "The value does not match its format (email, uuid, date-time, ...).",
    "OUT_OF_RANGE": "A number is below its minimum or above its maximum.",
    "TOO_LONG": "A string, array or object has more characters, items or members than allowed.",
    "TOO_SHORT": "A string, array or object has fewer characters, items or members than needed.",
    "PATTERN_MISMATCH": "A string does not match its pattern.",
    "NOT_ALLOWED": "A field that the schema does not declare (unknown fields are rejected).",
    "ENUM_MISMATCH": "The value is not one of the allowed values.",
    "INVALID": "The value breaks another rule of its schema; the detail says which.",
    "RULE_FAILED": (
        "A business rule of the description (`x-bastion-rules`, a CEL expression) does not hold; the"
        " entry names the rule and its message. A description may give a rule its own code instead."
    ),
    "CONTROL_CHARACTER": (
        "A string or parameter value holds a NUL or another C0 control character (other than"
        " tab, CR and LF) where its schema or parameter does not allow them"
        " (`x-bastion-allow-control-characters: true`)."
    ),
}
