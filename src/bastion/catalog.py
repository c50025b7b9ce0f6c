"""Every lint rule bastion knows: id, pitfall, severity, what it checks and how to fix it.

The ids are stable: they appear in reports, in SARIF, and in ``lint.disable`` lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Pitfall = Literal["idempotency", "errors", "rate-limiting", "validation", "description"]
Severity = Literal["error", "warning", "info"]

#: Stands for ``METHOD /template`` of the finding's operation in a fix's lines
#: (see :mod:`bastion.check.remediation`, which fills it in).
OPERATION = "{operation}"

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
    #: What to do, in words (the report prints it once per rule).
    hint: str
    #: The bastion.yaml lines that make bastion enforce what the rule asks, if bastion can.
    config: dict[str, Any] | None = None
    #: The ``x-bastion-*`` lines that do it from the operation in the description, if any.
    extension: dict[str, Any] | None = None


#: The rate limit rule a remediation suggests: per client, a minute's budget with a short burst.
PER_CLIENT: dict[str, Any] = {"name": "per-client", "key": "client", "limit": "100/minute", "burst": 20}

_ALL = (
    Rule(
        "idempotency-key-declared",
        "idempotency",
        "error",
        "POST and PATCH operations declare an Idempotency-Key header or x-bastion-idempotency.",
        "Add `x-bastion-idempotency: required` to the operation (bastion then rejects a request "
        "without the key and replays retries), or a header parameter "
        "`{name: Idempotency-Key, in: header, schema: {type: string, maxLength: 255}}`; "
        "`bastion lint --fix OUT` adds both the parameter and its responses.",
        config={"idempotency": {"enabled": True, "require": [OPERATION]}},
        extension={"x-bastion-idempotency": "required"},
    ),
    Rule(
        "idempotency-conflict-documented",
        "idempotency",
        "warning",
        "POST and PATCH operations document 409 or 422 for a reused idempotency key.",
        "Under the operation's responses add `'409': {$ref: '#/components/responses/Conflict'}` "
        "(the body bastion sends for a reused key); `bastion lint --fix OUT` adds it and the component.",
        config={"idempotency": {"enabled": True, "on_mismatch": 409}},
    ),
    Rule(
        "error-problem-json",
        "errors",
        "error",
        "4xx, 5xx and default responses use application/problem+json.",
        "Give the response `content: {application/problem+json: "
        "{schema: {$ref: '#/components/schemas/Problem'}}}` (RFC 9457, what bastion sends); "
        "`bastion lint --fix OUT` adds it beside the existing media types.",
        config={"errors": {"normalize_upstream": "all"}},
    ),
    Rule(
        "error-problem-schema",
        "errors",
        "error",
        "An application/problem+json schema declares type, title, status and detail.",
        "Add the missing members to the problem schema's `properties` (`type`, `title`, `status`, "
        "`detail`), or `$ref: '#/components/schemas/Problem'`; `bastion lint --fix OUT` adds them.",
        config={"errors": {"normalize_upstream": "all"}},
    ),
    Rule(
        "error-500-documented",
        "errors",
        "warning",
        "Every operation documents a 500 (or 5XX, or default) response.",
        "Under the operation's responses add `'500': {$ref: '#/components/responses/InternalError'}`; "
        "`bastion lint --fix OUT` adds it.",
        config={"errors": {"normalize_upstream": "all"}},
    ),
    Rule(
        "rate-limit-429-documented",
        "rate-limiting",
        "warning",
        "Every operation documents a 429 response.",
        "Limit the operation (`x-bastion-rate-limit: 100/minute` on it, or a `rate_limits.rules` entry "
        "in bastion.yaml) and document it: `'429': {$ref: '#/components/responses/RateLimited'}`; "
        "`bastion lint --fix OUT` adds the response.",
        config={"rate_limits": {"rules": [PER_CLIENT]}},
        extension={"x-bastion-rate-limit": "100/minute"},
    ),
    Rule(
        "rate-limit-429-headers",
        "rate-limiting",
        "warning",
        "A 429 response declares Retry-After and rate limit headers (RateLimit, RateLimit-Policy).",
        "Add `headers: {Retry-After: {$ref: '#/components/headers/RetryAfter'}, RateLimit: ..., "
        "RateLimit-Policy: ...}` to the 429 response (bastion sends all three); "
        "`bastion lint --fix OUT` adds them.",
        config={"rate_limits": {"headers": "both"}},
    ),
    Rule(
        "string-bounded",
        "validation",
        "warning",
        "Input strings are bounded by maxLength, enum, const, format or pattern.",
        "Add `maxLength: 255` (the longest value you accept) to the string, or an `enum`, a `format` "
        "or an anchored `pattern`; bastion then rejects longer values with 422.",
    ),
    Rule(
        "integer-bounded",
        "validation",
        "warning",
        "Input integers have a minimum and a maximum (or an enum).",
        "Add `minimum: 0` and `maximum: ...` (the range you accept) to the integer; bastion then rejects "
        "values outside it with 422.",
    ),
    Rule(
        "array-max-items",
        "validation",
        "warning",
        "Input arrays have maxItems.",
        "Add `maxItems: 100` (the most you accept) to the array; bastion rejects longer ones with 422.",
    ),
    Rule(
        "object-closed",
        "validation",
        "warning",
        "Input objects say additionalProperties: false (or unevaluatedProperties: false); "
        "a missing keyword leaves the object open.",
        "Add `additionalProperties: false` to the object so unknown fields are rejected with 422, "
        "or set `validation: {reject_unknown_fields: true}` in bastion.yaml to reject them everywhere.",
        config={"validation": {"reject_unknown_fields": True}},
    ),
    Rule(
        "request-body-typed",
        "validation",
        "error",
        "Every request body media type has a schema with a type.",
        "Give the media type a `schema: {type: object, properties: {...}}` (or a `$ref` to one), "
        "so bastion can validate the body.",
    ),
    Rule(
        "business-rules-compile",
        "validation",
        "error",
        "Every x-bastion-rules entry is a CEL expression over self that compiles, gives a boolean, "
        "costs time linear in the body, and sits where it is applied (not under oneOf or anyOf).",
        "Fix the rule as the message says (see docs/validation.md, Business rules); bastion refuses "
        "to start with a rule it cannot compile or bound.",
    ),
    Rule(
        "parameter-typed",
        "validation",
        "error",
        "Every parameter has a schema with a type.",
        "Give the parameter `schema: {type: string, maxLength: 64}` (its real type and bounds).",
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
    Rule(
        "idempotency-fingerprint-fields",
        "description",
        "error",
        "x-bastion-idempotency-fingerprint is a non-empty list of JSON pointers (RFC 6901).",
        "Write the body fields that make two requests the same, such as "
        "`x-bastion-idempotency-fingerprint: [/amount, /currency]`; bastion refuses to start with "
        "any other value.",
    ),
    Rule(
        "lint-ignore-valid",
        "description",
        "warning",
        "Every x-bastion-lint-ignore is a mapping of known rule ids to the reason each is ignored.",
        "Write `x-bastion-lint-ignore: {rule-id: why it does not apply}` with ids from `bastion lint`'s "
        "report; an unknown id (a typo) ignores nothing.",
    ),
)

#: Rules that ``x-bastion-lint-ignore`` cannot silence: the ignore list's own check, and findings
#: about the file as a whole, which have no operation to sit under.
UNIGNORABLE = frozenset({"lint-ignore-valid", "spec-parse-error", "spec-aliases"})

#: Every rule by id.
RULES: dict[str, Rule] = {rule.id: rule for rule in _ALL}
