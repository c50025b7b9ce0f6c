"""The components ``bastion lint --fix`` installs: the problem schemas, headers and responses.

They go to the description's ``components`` once and are referenced from every
operation (see :mod:`bastion.check.fix`).
"""

from __future__ import annotations

from typing import Any

#: One entry of a problem's ``errors[]``, as the ``FieldError`` schema.
FIELD_ERROR_SCHEMA: dict[str, Any] = {
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


def problem_schema(field_error_ref: str) -> dict[str, Any]:
    """The ``Problem`` schema, its ``errors[]`` items referring to ``field_error_ref``."""
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


#: The response headers bastion may add, as header components.
HEADERS: dict[str, dict[str, Any]] = {
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

#: (status, component name, description) of the responses bastion may add.
RESPONSES = {
    "400": ("BadRequest", "Malformed request or missing idempotency key."),
    "409": ("Conflict", "Idempotency key reused with another request, or that request is still running."),
    "413": ("PayloadTooLarge", "The body is larger than the limit."),
    "415": ("UnsupportedMediaType", "The body's Content-Type is not accepted."),
    "422": ("ValidationFailed", "The request breaks the API description; errors[] lists every field."),
    "429": ("RateLimited", "Too many requests; retry after Retry-After seconds."),
    "500": ("InternalError", "The server failed; the trace_id identifies the failure in its logs."),
}
