"""``bastion lint --fix``: write the description augmented with what bastion enforces.

Every operation gets problem responses (``application/problem+json``) for its
errors, a 429 with ``Retry-After``, ``RateLimit`` and ``RateLimit-Policy``, a 500,
and where it has a body 413 and 415; POST and PATCH get the ``Idempotency-Key``
header and 409/422. Existing error responses keep their media types and gain a
problem one. The shared pieces go to ``components`` once and are referenced,
so the result stays small and generated clients get one ``Problem`` type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from bastion.check.document import Document, Path_, iter_operations, no_gc
from bastion.check.emit import write_yaml
from bastion.check.findings import FindingSink
from bastion.check.rules.operations import (
    IDEMPOTENCY_HEADER,
    PROBLEM_MEDIA,
    PROBLEM_MEMBERS,
    UNSAFE_METHODS,
    deref,
    is_error_status,
    problem_media,
)
from bastion.check.rules.schemas import SchemaWalker

_FIELD_ERROR: dict[str, Any] = {
    "type": "object",
    "description": "One broken field or parameter.",
    "properties": {
        "code": {"type": "string", "maxLength": 64, "example": "OUT_OF_RANGE"},
        "in": {"type": "string", "enum": ["body", "path", "query", "header", "cookie"]},
        "pointer": {"type": "string", "maxLength": 1024, "description": "JSON pointer into the body"},
        "field": {"type": "string", "maxLength": 256},
        "name": {"type": "string", "maxLength": 256, "description": "the parameter name"},
        "detail": {"type": "string", "maxLength": 1024},
    },
    "required": ["code", "detail"],
}


def _problem_schema(field_error_ref: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "An error, as an RFC 9457 problem. `code` is stable; branch on it.",
        "properties": {
            "type": {"type": "string", "format": "uri-reference", "maxLength": 2048},
            "title": {"type": "string", "maxLength": 256},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string", "maxLength": 4096},
            "instance": {"type": "string", "maxLength": 2048},
            "code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$", "maxLength": 64},
            "trace_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "errors": {"type": "array", "maxItems": 1000, "items": {"$ref": field_error_ref}},
        },
        "required": ["type", "title", "status"],
    }


_HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0, "maximum": 86400},
    },
    "RateLimit": {
        "description": "The remaining quota and reset time of the closest limit (IETF draft).",
        "schema": {"type": "string", "maxLength": 1024},
    },
    "RateLimit-Policy": {
        "description": "The quota policies that apply to the request (IETF draft).",
        "schema": {"type": "string", "maxLength": 1024},
    },
}

# (status, component name, description) of the responses bastion may add.
_RESPONSES = {
    "400": ("BadRequest", "Malformed request or missing idempotency key."),
    "409": ("Conflict", "Idempotency key reused with another request, or that request is still running."),
    "413": ("PayloadTooLarge", "The body is larger than the limit."),
    "415": ("UnsupportedMediaType", "The body's Content-Type is not accepted."),
    "422": ("ValidationFailed", "The request breaks the API description; errors[] lists every field."),
    "429": ("RateLimited", "Too many requests; retry after Retry-After seconds."),
    "500": ("InternalError", "The server failed; the trace_id identifies the failure in its logs."),
}


class Fixer:
    """Adds the problem, rate limit and idempotency documentation to a parsed description."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.changes = 0
        root = doc.data
        self.components: dict[str, Any] = root.setdefault("components", {})
        self._fixed_responses: set[int] = set()
        self.walker = SchemaWalker(doc, FindingSink(doc, frozenset()))
        self.problem_ref = self._install_schemas()
        self.header_refs = {
            name: self._install("headers", name.replace("-", ""), spec) for name, spec in _HEADERS.items()
        }
        self.key_refs = {
            required: self._existing_key()
            or self._install(
                "parameters",
                "IdempotencyKeyRequired" if required else "IdempotencyKey",
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": required,
                    "description": "A unique key per logical operation (a UUID); a retry with the same key "
                    "returns the first response instead of running the operation again.",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                },
            )
            for required in (False, True)
        }
        self.response_refs = {
            code: self._response(code, name, text) for code, (name, text) in _RESPONSES.items()
        }

    def _install(self, section: str, name: str, value: dict[str, Any]) -> str:
        """Put ``value`` under components/section, beside anything of the same name; returns its $ref."""
        bucket = self.components.setdefault(section, {})
        chosen = name
        if name in bucket and bucket[name] != value:
            chosen = "Bastion" + name
        if bucket.get(chosen) != value:
            bucket[chosen] = value
            self.changes += 1
        return f"#/components/{section}/{chosen}"

    def _existing_key(self) -> str | None:
        """A component that already declares the Idempotency-Key header: the description's choice wins."""
        params = self.components.get("parameters")
        for name, param in params.items() if isinstance(params, dict) else ():
            if (
                isinstance(param, dict)
                and str(param.get("name", "")).lower() == IDEMPOTENCY_HEADER
                and param.get("in") == "header"
            ):
                return f"#/components/parameters/{name}"
        return None

    def _install_schemas(self) -> str:
        schemas = self.components.setdefault("schemas", {})
        field_ref = self._install("schemas", "FieldError", _FIELD_ERROR)
        existing = schemas.get("Problem")
        if existing is not None and not self.walker.missing_properties(existing, PROBLEM_MEMBERS):
            return "#/components/schemas/Problem"
        return self._install("schemas", "Problem", _problem_schema(field_ref))

    def _problem_content(self) -> dict[str, Any]:
        return {PROBLEM_MEDIA: {"schema": {"$ref": self.problem_ref}}}

    def _response(self, code: str, name: str, text: str) -> str:
        response: dict[str, Any] = {"description": text, "content": self._problem_content()}
        if code == "429":
            response["headers"] = {h: {"$ref": ref} for h, ref in self.header_refs.items()}
        return self._install("responses", name, response)

    def run(self) -> int:
        """Augment every operation; returns the number of changes made."""
        paths = self.doc.data.get("paths")
        if not isinstance(paths, dict):
            return self.changes
        for template, raw_item in paths.items():
            item, item_path = deref(self.doc, raw_item, ("paths", template))
            if not isinstance(item, dict):
                continue
            for _, method, op, _ in iter_operations({template: item}):
                if isinstance(op, dict):
                    self.operation(method, op, item, (*item_path, method))
        return self.changes

    def operation(self, method: str, op: dict[str, Any], item: dict[str, Any], path: Path_) -> None:
        """Augment one operation."""
        responses = op.get("responses")
        if not isinstance(responses, dict):
            responses = op["responses"] = {}
        for code, response in list(responses.items()):
            code_s = str(code)
            if is_error_status(code_s.upper() if code_s != "default" else code_s):
                self.error_response(code_s, response)
        has_body = op.get("requestBody") is not None
        has_params = bool(op.get("parameters") or item.get("parameters"))
        wanted = ["429"]
        if has_body or has_params:
            wanted += ["400", "422"]
        if has_body:
            wanted += ["413", "415"]
        if method in UNSAFE_METHODS:
            wanted += ["400", "409", "422"]
            self.idempotency_key(op, item)
        codes = {str(c).upper() for c in responses}
        if not codes & {"500", "5XX", "DEFAULT"}:
            wanted.append("500")
        for code in wanted:
            if code not in codes:
                responses[code] = {"$ref": self.response_refs[code]}
                codes.add(code)
                self.changes += 1

    def error_response(self, code: str, raw: Any) -> None:
        """Give an existing error response a problem body (and a 429 its headers)."""
        response, _ = deref(self.doc, raw, ())
        if not isinstance(response, dict) or id(response) in self._fixed_responses:
            return
        self._fixed_responses.add(id(response))
        content = response.get("content")
        if not isinstance(content, dict):
            content = response["content"] = {}
        media = problem_media(content)
        if media is None:
            content[PROBLEM_MEDIA] = {"schema": {"$ref": self.problem_ref}}
            self.changes += 1
        else:
            media_obj = content[media] if isinstance(content[media], dict) else {}
            content[media] = media_obj
            schema = media_obj.get("schema")
            if self.walker.missing_properties(schema, PROBLEM_MEMBERS):
                problem = {"$ref": self.problem_ref}
                media_obj["schema"] = {"allOf": [schema, problem]} if schema is not None else problem
                self.changes += 1
        if code == "429":
            headers = response.get("headers")
            if not isinstance(headers, dict):
                headers = response["headers"] = {}
            names = {str(h).lower() for h in headers}
            for name, ref in self.header_refs.items():
                if name.lower() not in names:
                    headers[name] = {"$ref": ref}
                    self.changes += 1

    def idempotency_key(self, op: dict[str, Any], item: dict[str, Any]) -> None:
        """Add the Idempotency-Key header parameter to an unsafe operation that lacks it."""
        for params in (item.get("parameters"), op.get("parameters")):
            for raw in params if isinstance(params, list) else ():
                param, _ = deref(self.doc, raw, ())
                if (
                    isinstance(param, dict)
                    and str(param.get("name", "")).lower() == IDEMPOTENCY_HEADER
                    and param.get("in") == "header"
                ):
                    return
        required = str(op.get("x-bastion-idempotency", "")).lower() == "required"
        params = op.get("parameters")
        if not isinstance(params, list):
            params = op["parameters"] = []
        params.append({"$ref": self.key_refs[required]})
        self.changes += 1


def dump(data: Any, path: Path) -> None:
    """Write ``data`` as JSON when ``path`` ends in .json, else as YAML."""
    if path.suffix.lower() == ".json":
        path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
        return
    with path.open("w", encoding="utf-8") as out:
        write_yaml(data, out)


def fix_document(doc: Document) -> int:
    """Augment ``doc.data`` in place; returns the number of changes."""
    if not isinstance(doc.data, dict):
        return 0
    return Fixer(doc).run()


#: The deepest description --fix writes: orjson stops at 255 levels (the YAML writer has no
#: limit, but one rule for both formats); the fix itself adds at most a few levels.
FIX_MAX_DEPTH = 240


class FixRefused(Exception):
    """The description cannot be written out in full, so ``--fix`` writes nothing."""


def write_fixed(doc: Document, out: str | Path) -> int:
    """Augment ``doc`` and write it to ``out``; returns the number of changes.

    The output spells every alias out (no anchors), so a description whose aliases
    expand without bound (``spec-aliases``) is refused rather than written, and so is
    one nesting deeper than ``FIX_MAX_DEPTH``.
    """
    if doc.alias_problem is not None:
        raise FixRefused(doc.alias_problem)
    if doc.depth > FIX_MAX_DEPTH:
        raise FixRefused(f"it nests {doc.depth} levels deep; --fix writes at most {FIX_MAX_DEPTH}")
    with no_gc():
        changes = fix_document(doc)
        dump(doc.data, Path(out))
    return changes
