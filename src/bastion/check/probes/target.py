"""The API under probe as the description tells it: its operations, with concrete paths and bodies."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from bastion.check.document import Document, iter_operations
from bastion.check.probes.payloads import SchemaSampler
from bastion.check.rules.operations import IDEMPOTENCY_HEADER, deref

_PARAM = re.compile(r"\{([^}/]+)\}")


@dataclass(slots=True)
class Operation:
    """One operation of the description, ready to be called."""

    method: str
    template: str
    path: str
    operation: dict[str, Any]
    json_schema: Any = None
    media_types: list[str] = field(default_factory=list)
    key_declared: bool = False
    key_required: bool = False
    query: dict[str, Any] = field(default_factory=dict)
    required_query: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``METHOD /template``."""
        return f"{self.method} {self.template}"


@dataclass(slots=True)
class TargetAPI:
    """Every operation of a description, and which methods each path allows."""

    operations: list[Operation]
    methods: dict[str, set[str]]

    def with_json_body(self, methods: tuple[str, ...] = ("POST", "PUT", "PATCH")) -> list[Operation]:
        """Operations that take a JSON object body."""
        return [op for op in self.operations if op.method in methods and op.json_schema is not None]

    def simple_get(self) -> Operation | None:
        """A GET without path parameters or required query parameters (for bursts)."""
        for op in self.operations:
            if op.method == "GET" and "{" not in op.template and not op.required_query:
                return op
        return next((op for op in self.operations if op.method == "GET"), None)


def build_target(doc: Document, sampler: SchemaSampler) -> TargetAPI:
    """Read the operations out of a parsed description."""
    operations: list[Operation] = []
    methods: dict[str, set[str]] = {}
    root = doc.data if isinstance(doc.data, dict) else {}
    paths = root.get("paths")
    if not isinstance(paths, dict):
        return TargetAPI([], {})
    for template, raw_item in paths.items():
        item, _ = deref(doc, raw_item, ())
        if not isinstance(item, dict):
            continue
        for _, method, op, _ in iter_operations({str(template): item}):
            if not isinstance(op, dict):
                continue
            methods.setdefault(str(template), set()).add(method.upper())
            operations.append(_operation(doc, sampler, str(template), method.upper(), op, item))
    return TargetAPI(operations, methods)


def _operation(
    doc: Document,
    sampler: SchemaSampler,
    template: str,
    method: str,
    op: dict[str, Any],
    item: dict[str, Any],
) -> Operation:
    params: dict[tuple[str, str], dict[str, Any]] = {}
    for source in (item.get("parameters"), op.get("parameters")):
        for raw in source if isinstance(source, list) else ():
            param, _ = deref(doc, raw, ())
            if isinstance(param, dict) and isinstance(param.get("name"), str):
                params[(str(param.get("in")), param["name"])] = param
    values: dict[str, str] = {}
    for (where, name), param in params.items():
        if where == "path":
            value = param["example"] if "example" in param else sampler.sample(param.get("schema", {}))
            values[name] = quote(str(value if value is not None else "probe"), safe="")
    path = _PARAM.sub(lambda m: values.get(m.group(1), "probe"), template)
    result = Operation(method, template, path, op)
    for (where, name), param in params.items():
        if where == "header" and name.lower() == IDEMPOTENCY_HEADER:
            result.key_declared = True
            result.key_required = bool(param.get("required"))
        elif where == "query":
            result.query[name] = param
            if param.get("required"):
                result.required_query[name] = sampler.sample(param.get("schema", {}))
    marker = str(op.get("x-bastion-idempotency", "")).lower()
    if marker:
        result.key_declared = True
        result.key_required = result.key_required or marker == "required"
    body, _ = deref(doc, op.get("requestBody"), ())
    if isinstance(body, dict) and isinstance(body.get("content"), dict):
        result.media_types = [str(m) for m in body["content"]]
        for media, media_obj in body["content"].items():
            if str(media).split(";")[0].strip().lower() == "application/json" and isinstance(media_obj, dict):
                result.json_schema = media_obj.get("schema")
    return result


def query_string(values: dict[str, Any]) -> str:
    """``?a=1&b=x`` for ``values`` (empty when there are none)."""
    if not values:
        return ""
    from urllib.parse import urlencode

    return "?" + urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in values.items()})
