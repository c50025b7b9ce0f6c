"""The fix of a finding: an instruction, and what bastion enforces as bastion.yaml or x-bastion-* lines.

Every lint rule (:mod:`bastion.catalog`) and every probe check
(:mod:`bastion.check.probe_checks`) has a :class:`Remediation`. Its ``config`` is a
fragment of bastion.yaml and its ``extension`` the ``x-bastion-*`` members of the
operation in the description; either may name the operation with the
:data:`OPERATION` placeholder, which :meth:`Remediation.at` fills in (or drops, when
the finding has no operation). Fragments merge with :func:`merge_fragment`, which
is how ``bastion probe --suggest-config`` builds a starter configuration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from bastion.catalog import OPERATION, Rule

__all__ = ["OPERATION", "MergeConflict", "Remediation", "merge_fragment", "rule_remediation"]

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
#: ``METHOD /template`` in a probe check's title or detail.
_LABEL = re.compile(r"\b(GET|PUT|POST|DELETE|OPTIONS|HEAD|PATCH|TRACE) (/[^\s:,;'\"()]*)")


@dataclass(frozen=True, slots=True)
class Remediation:
    """How to close a finding: what to do, and the lines that make bastion enforce it."""

    text: str
    #: A bastion.yaml fragment (``None``: bastion cannot enforce it; the text says what to do).
    config: dict[str, Any] | None = None
    #: ``x-bastion-*`` members for the operation in the description.
    extension: dict[str, Any] | None = None

    def at(self, operation: str | None) -> Remediation:
        """This remediation for ``operation`` (``METHOD /template``), or for no operation."""
        return Remediation(
            self.text, _fill(self.config, operation) or None, _fill(self.extension, operation) or None
        )

    def config_yaml(self) -> str | None:
        """The bastion.yaml lines, or ``None``."""
        return to_yaml(self.config) if self.config else None

    def extension_yaml(self) -> str | None:
        """The ``x-bastion-*`` lines for the operation, or ``None``."""
        return to_yaml(self.extension) if self.extension else None

    def as_dict(self) -> dict[str, Any]:
        """The remediation as plain data for JSON: text, config and extension as YAML text."""
        return {"text": self.text, "config": self.config_yaml(), "extension": self.extension_yaml()}

    def lines(self) -> list[str]:
        """The remediation as text lines: the instruction, then the lines to add."""
        out = [f"fix: {self.text}"]
        config, extension = self.config_yaml(), self.extension_yaml()
        if config:
            out += ["bastion.yaml:", *(f"  {line}" for line in config.splitlines())]
        if extension:
            where = (
                "or, on the operation in the description:"
                if config
                else "on the operation in the description:"
            )
            out += [where, *(f"  {line}" for line in extension.splitlines())]
        return out

    def markdown(self) -> str:
        """The remediation as Markdown, with the lines in fenced YAML blocks."""
        parts = [self.text]
        config, extension = self.config_yaml(), self.extension_yaml()
        if config:
            parts.append(f"In bastion.yaml:\n\n```yaml\n{config}```")
        if extension:
            where = "Or, on the operation" if config else "On the operation"
            parts.append(f"{where} in the description:\n\n```yaml\n{extension}```")
        return "\n\n".join(parts)


def rule_remediation(rule: Rule) -> Remediation:
    """A lint rule's fix: its hint, and its bastion.yaml and ``x-bastion-*`` lines (unfilled)."""
    return Remediation(rule.hint, rule.config, rule.extension)


def to_yaml(data: dict[str, Any]) -> str:
    """``data`` as block YAML, keys in their order."""
    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True))


def _fill(data: Any, operation: str | None) -> Any:
    """``data`` with :data:`OPERATION` filled in; without an operation, members naming it go."""
    if isinstance(data, dict):
        filled = {k: _fill(v, operation) for k, v in data.items() if not _names_operation(v, operation)}
        return {k: v for k, v in filled.items() if v != [] and v != {}}
    if isinstance(data, list):
        return [_fill(v, operation) for v in data if not _names_operation(v, operation)]
    if isinstance(data, str) and operation is not None:
        return data.replace(OPERATION, operation)
    return data


def _names_operation(value: Any, operation: str | None) -> bool:
    return operation is None and isinstance(value, str) and OPERATION in value


def operation_at(pointer: str) -> str | None:
    """``METHOD /template`` of the operation a lint finding's JSON pointer lies in, if any."""
    parts = pointer.split("/")
    if len(parts) < 4 or parts[1] != "paths" or parts[3] not in _METHODS:
        return None
    template = parts[2].replace("~1", "/").replace("~0", "~")
    return f"{parts[3].upper()} {template}"


def operation_named(*texts: str) -> str | None:
    """The first ``METHOD /template`` that a probe check's title or detail names, if any."""
    for text in texts:
        match = _LABEL.search(text)
        if match is not None:
            return f"{match.group(1)} {match.group(2)}"
    return None


class MergeConflict(Exception):
    """Two fragments set one bastion.yaml key to different values."""


def merge_fragment(into: dict[str, Any], fragment: dict[str, Any], where: str = "") -> None:
    """Merge ``fragment`` into ``into`` in place: mappings recursively, lists as a union.

    A list of mappings with ``name`` (rate limit rules) keeps one entry per name. A
    scalar already set to another value is a :class:`MergeConflict` naming the key.
    """
    for key, value in fragment.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in into:
            into[key] = _copy(value)
        elif isinstance(into[key], dict) and isinstance(value, dict):
            merge_fragment(into[key], value, path)
        elif isinstance(into[key], list) and isinstance(value, list):
            names = {item.get("name") for item in into[key] if isinstance(item, dict)}
            for item in value:
                named = isinstance(item, dict) and item.get("name") in names
                if item not in into[key] and not named:
                    into[key].append(_copy(item))
        elif into[key] != value:
            raise MergeConflict(f"{path} is {into[key]!r} in one fix and {value!r} in another")


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
