"""Generates ``docs/configuration.md`` from the configuration model, so it cannot go stale.

Run ``python -m bastion.configdocs > docs/configuration.md``; a test fails when the
file differs from what this prints, or when a key has no description.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from bastion._model import Section
from bastion.config import Config

_HEADER = """# Configuration

bastion reads one YAML file (`bastion.yaml`), a dict or a `Config` object. Unknown keys
are errors, reported with their key path and the keys that are valid there, and the
process does not start with a bad file: check one with `bastion config check FILE`.

Every key can also come from the environment: `BASTION_` followed by the key path in
upper case with `__` between levels, for example `BASTION_STORE=redis://127.0.0.1:6379/0`
or `BASTION_RATE_LIMITS__ON_STORE_ERROR=closed`. Values are read as YAML scalars.

Durations are written `500ms`, `60s`, `5m`, `24h` or `7d`; rates `100/minute`, `5/min`,
`1000/s` or `10/5s`; sizes `1048576`, `64KiB` or `1MiB`.

This page is generated from the code (`python -m bastion.configdocs`).
"""


def _section_of(annotation: Any) -> type[Section] | None:
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_of(arg)
        if found is not None:
            return found
    return None


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation) if a is not type(None))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is list:
        return "list of " + _type_name(typing.get_args(annotation)[0])
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"map of {_type_name(key)} to {_type_name(value)}"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "section"
        return {
            "str": "string",
            "int": "integer",
            "bool": "boolean",
            "float": "number",
            "Duration": "duration",
            "Rate": "rate",
        }.get(annotation.__name__, annotation.__name__)
    return str(annotation)


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "required"
    if isinstance(value, BaseModel):
        return ""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | dict) and not value:
        return "empty"
    return f"`{value}`"


def rows(model: type[Section] = Config, prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """``(key path, type, default, description)`` for every key, depth first."""
    for name, field in model.model_fields.items():
        path = prefix + name
        annotation = field.annotation
        section = _section_of(annotation)
        description = " ".join((field.description or "").split())
        if section is not None and typing.get_origin(annotation) is None:
            yield path, "section", "", description or (section.__doc__ or "").strip().split("\n")[0]
            yield from rows(section, path + ".")
        elif section is not None:
            yield path, _type_name(annotation), _default(field), description
            yield from rows(section, path + "[].")
        else:
            yield path, _type_name(annotation), _default(field), description


def render_markdown() -> str:
    """The whole ``docs/configuration.md`` page."""
    lines = [_HEADER, "| key | type | default | what it does |", "|---|---|---|---|"]
    for path, kind, default, description in rows():
        escaped = description.replace("|", "\\|")
        lines.append(f"| `{path}` | {kind} | {default} | {escaped} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
