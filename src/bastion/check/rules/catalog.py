"""Every lint rule bastion knows: id, pitfall, severity, what it checks and how to fix it.

The ids are stable: they appear in reports, in SARIF, and in ``lint.disable`` lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Pitfall = Literal["idempotency", "errors", "rate-limiting", "validation", "description"]
Severity = Literal["error", "warning", "info"]

#: Pitfalls in report order.
PITFALLS: tuple[Pitfall, ...] = ("idempotency", "errors", "rate-limiting", "validation", "description")
#: Severity rank: a finding fails a run when its rank reaches the ``fail_on`` rank.
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2}


@dataclass(frozen=True, slots=True)
class Rule:
    """One lint rule."""

    id: str
    pitfall: Pitfall
    severity: Severity
    summary: str
    hint: str


_ALL = (
    Rule(
        "idempotency-key-declared",
        "idempotency",
        "error",
        "POST and PATCH operations declare an Idempotency-Key header or x-bastion-idempotency.",
        "Add a header parameter `Idempotency-Key` (string, maxLength 255), or "
        "`x-bastion-idempotency: required`, so retries cannot create duplicates.",
    ),
    Rule(
        "idempotency-conflict-documented",
        "idempotency",
        "warning",
        "POST and PATCH operations document 409 or 422 for a reused idempotency key.",
        "Document a 409 (or 422) problem response for a key reused with another request.",
    ),
    Rule(
        "error-problem-json",
        "errors",
        "error",
        "4xx, 5xx and default responses use application/problem+json.",
        "Give every error response an `application/problem+json` body (RFC 9457).",
    ),
    Rule(
        "error-problem-schema",
        "errors",
        "error",
        "An application/problem+json schema declares type, title, status and detail.",
        "Reference a Problem schema with the properties type, title, status and detail.",
    ),
    Rule(
        "error-500-documented",
        "errors",
        "warning",
        "Every operation documents a 500 (or 5XX, or default) response.",
        "Document a 500 problem response so clients know what a server failure looks like.",
    ),
    Rule(
        "rate-limit-429-documented",
        "rate-limiting",
        "warning",
        "Every operation documents a 429 response.",
        "Document a 429 problem response with Retry-After and RateLimit headers.",
    ),
    Rule(
        "rate-limit-429-headers",
        "rate-limiting",
        "warning",
        "A 429 response declares Retry-After and rate limit headers (RateLimit, RateLimit-Policy).",
        "Declare the headers Retry-After, RateLimit and RateLimit-Policy on the 429 response.",
    ),
    Rule(
        "string-bounded",
        "validation",
        "warning",
        "Input strings are bounded by maxLength, enum, const, format or pattern.",
        "Add `maxLength` (or an enum, a format or an anchored pattern) to the string.",
    ),
    Rule(
        "integer-bounded",
        "validation",
        "warning",
        "Input integers have a minimum and a maximum (or an enum).",
        "Add `minimum` and `maximum` to the integer.",
    ),
    Rule(
        "array-max-items",
        "validation",
        "warning",
        "Input arrays have maxItems.",
        "Add `maxItems` to the array.",
    ),
    Rule(
        "object-closed",
        "validation",
        "warning",
        "Input objects say additionalProperties: false (or unevaluatedProperties: false); "
        "a missing keyword leaves the object open.",
        "Add `additionalProperties: false` so unknown fields are rejected, not silently accepted.",
    ),
    Rule(
        "request-body-typed",
        "validation",
        "error",
        "Every request body media type has a schema with a type.",
        "Give the request body a schema with a `type` (or a $ref to one).",
    ),
    Rule(
        "parameter-typed",
        "validation",
        "error",
        "Every parameter has a schema with a type.",
        "Give the parameter a `schema` with a `type`.",
    ),
    Rule(
        "spec-parse-error",
        "description",
        "error",
        "The description is well-formed YAML or JSON.",
        "Fix the syntax at the reported line.",
    ),
    Rule(
        "spec-aliases",
        "description",
        "error",
        "YAML aliases expand to a finite document of modest size (no alias bomb, no alias inside itself).",
        "Replace the anchors and aliases with $refs to components; tools that expand aliases "
        "run out of memory or loop on this document.",
    ),
    Rule(
        "spec-structure",
        "description",
        "error",
        "The description has the structure OpenAPI 3 requires (openapi, info, paths, responses).",
        "Fix the member at the reported path as the message says.",
    ),
    Rule(
        "ref-unresolved",
        "description",
        "error",
        "Every local $ref points at something that exists.",
        "Point the $ref at an existing JSON pointer, such as #/components/schemas/Name.",
    ),
    Rule(
        "ref-external",
        "description",
        "info",
        "External $refs (other files, URLs) are not followed, so what they hold is not checked.",
        "Bundle the description into one file to have everything checked.",
    ),
    Rule(
        "operation-id-unique",
        "description",
        "error",
        "operationId values are unique.",
        "Rename one of the operations; generated clients need unique names.",
    ),
)

#: Every rule by id.
RULES: dict[str, Rule] = {rule.id: rule for rule in _ALL}
