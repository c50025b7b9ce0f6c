"""RFC 9457 problems: the exception hierarchy, the error-code registry and the one renderer.

Every error bastion produces, and every error an application raises through it,
is a :class:`Problem`. A problem carries a stable ``code`` that clients can
branch on; the ``type`` URI is derived from it and ``errors.type_base``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

PROBLEM_CONTENT_TYPE = b"application/problem+json"


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One entry of the error-code registry: what a code means and what a client should do."""

    code: str
    status: int
    title: str
    meaning: str
    action: str
    module: str = __name__


_REGISTRY: dict[str, ErrorCode] = {}


def register_code(
    code: str, status: int, title: str, meaning: str, action: str, module: str = __name__
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


def type_uri(type_base: str, code: str) -> str:
    """The problem ``type`` for ``code``: ``type_base`` plus the code in kebab-case."""
    return type_base + code.lower().replace("_", "-")


_CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


class Problem(Exception):
    """An HTTP error rendered as ``application/problem+json``.

    Raise it (or a subclass) from a handler behind :class:`bastion.Bastion`::

        raise NotFound(detail="order 42 does not exist")
        raise Conflict(code="ORDER_ALREADY_PAID", detail="the order was paid at 10:02")

    ``errors`` holds field-level entries, each a mapping with at least ``code`` and
    ``detail``. ``headers`` are added to the response. ``extensions`` become extra
    top-level members of the body.
    """

    status: ClassVar[int] = 500
    code_default: ClassVar[str] = "INTERNAL_ERROR"
    title_default: ClassVar[str] = "Internal server error"
    #: Documentation for the registry; a subclass that sets both registers its code.
    meaning: ClassVar[str] = ""
    action: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "meaning" in cls.__dict__ and "action" in cls.__dict__:
            register_code(
                cls.code_default, cls.status, cls.title_default, cls.meaning, cls.action, cls.__module__
            )

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        title: str | None = None,
        status: int | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        self.code = code or self.code_default
        if not _CODE_RE.match(self.code):
            raise ValueError(f"problem code {self.code!r} must be UPPER_SNAKE_CASE")
        if status is not None:
            if not 400 <= status <= 599:
                raise ValueError(f"problem status {status} is not an error status")
            self.status = status  # type: ignore[misc]  # per-instance override of the class default
        self.title = title or self.title_default
        self.detail = detail
        self.errors = list(errors) if errors else []
        self.headers = dict(headers) if headers else {}
        self.extensions = dict(extensions) if extensions else {}
        super().__init__(detail or self.title)

    def to_dict(self, *, type_base: str, trace_id: str, instance: str | None) -> dict[str, Any]:
        """The problem body as a dictionary, members in RFC 9457 order."""
        body: dict[str, Any] = {
            "type": type_uri(type_base, self.code),
            "title": self.title,
            "status": self.status,
        }
        if self.detail is not None:
            body["detail"] = self.detail
        if instance is not None:
            body["instance"] = instance
        body["code"] = self.code
        body["trace_id"] = trace_id
        if self.errors:
            body["errors"] = self.errors
        for key, value in self.extensions.items():
            body.setdefault(key, value)
        return body


class BadRequest(Problem):
    """400 Bad request."""

    status = 400
    code_default = "BAD_REQUEST"
    title_default = "Bad request"
    meaning = "The request is malformed in a way no more specific code describes."
    action = "Fix the request as the detail says; do not retry it unchanged."


class MalformedBody(Problem):
    """400 Malformed request body."""

    status = 400
    code_default = "MALFORMED_BODY"
    title_default = "Malformed request body"
    meaning = (
        "The body could not be parsed as its Content-Type says (for example invalid "
        "JSON); the detail gives the position."
    )
    action = "Send a well-formed body; do not retry it unchanged."


class IdempotencyKeyMissing(Problem):
    """400 Idempotency key missing."""

    status = 400
    code_default = "IDEMPOTENCY_KEY_MISSING"
    title_default = "Idempotency key missing"
    meaning = "The operation requires an Idempotency-Key header and the request has none."
    action = "Generate a unique key (a UUID) per logical operation and send it; reuse it on retries."


class IdempotencyKeyInvalid(Problem):
    """400 Idempotency key invalid."""

    status = 400
    code_default = "IDEMPOTENCY_KEY_INVALID"
    title_default = "Idempotency key invalid"
    meaning = "The Idempotency-Key header is empty, longer than 255 characters or not visible ASCII."
    action = "Send 1 to 255 visible ASCII characters, for example a UUID."


class Unauthorized(Problem):
    """401 Authentication required."""

    status = 401
    code_default = "UNAUTHORIZED"
    title_default = "Authentication required"
    meaning = "The request lacks valid credentials."
    action = "Authenticate and retry."


class Forbidden(Problem):
    """403 Forbidden."""

    status = 403
    code_default = "FORBIDDEN"
    title_default = "Forbidden"
    meaning = "The credentials are valid but do not allow this request."
    action = "Do not retry; ask for the needed permission."


class NotFound(Problem):
    """404 Not found."""

    status = 404
    code_default = "NOT_FOUND"
    title_default = "Not found"
    meaning = "No resource or route matches the request's path."
    action = "Check the path against the API description."


class MethodNotAllowed(Problem):
    """405 Method not allowed."""

    status = 405
    code_default = "METHOD_NOT_ALLOWED"
    title_default = "Method not allowed"
    meaning = "The path exists but does not support this method; the Allow header lists those it does."
    action = "Use one of the methods in the Allow header."


class Conflict(Problem):
    """409 Conflict."""

    status = 409
    code_default = "CONFLICT"
    title_default = "Conflict"
    meaning = "The request conflicts with the current state of the resource."
    action = "Read the current state and decide; applications usually raise a more specific code."


class IdempotencyKeyReused(Problem):
    """409 Idempotency key reused."""

    status = 409
    code_default = "IDEMPOTENCY_KEY_REUSED"
    title_default = "Idempotency key reused"
    meaning = (
        "The key was already used with a different request (method, route, query or "
        "body). The status is 422 when idempotency.on_mismatch is 422."
    )
    action = "Use a new key for a new operation; reuse a key only to retry the identical request."


class IdempotencyRequestInProgress(Problem):
    """409 Request with this idempotency key in progress."""

    status = 409
    code_default = "IDEMPOTENCY_REQUEST_IN_PROGRESS"
    title_default = "Request with this idempotency key in progress"
    meaning = "The first request with this key is still running."
    action = "Retry the identical request after Retry-After seconds to get its result."


class PayloadTooLarge(Problem):
    """413 Payload too large."""

    status = 413
    code_default = "PAYLOAD_TOO_LARGE"
    title_default = "Payload too large"
    meaning = "The body is larger than validation.max_body_bytes; it was not read past that limit."
    action = "Send a smaller body."


class UnsupportedMediaType(Problem):
    """415 Unsupported media type."""

    status = 415
    code_default = "UNSUPPORTED_MEDIA_TYPE"
    title_default = "Unsupported media type"
    meaning = "The operation does not accept the body's Content-Type; the detail lists the accepted types."
    action = "Send the body in one of the accepted media types."


class UnprocessableContent(Problem):
    """422 Unprocessable content."""

    status = 422
    code_default = "UNPROCESSABLE_CONTENT"
    title_default = "Unprocessable content"
    meaning = "The request is well-formed but cannot be processed."
    action = "Fix the request as the detail says."


class ValidationFailed(Problem):
    """422 Request validation failed."""

    status = 422
    code_default = "VALIDATION_FAILED"
    title_default = "Request validation failed"
    meaning = (
        "A parameter or the body breaks the API description. Each entry of errors[] names"
        " the place (in, pointer or name, field) and has its own code."
    )
    action = "Fix every listed field; do not retry unchanged."


class RateLimited(Problem):
    """429 Too many requests."""

    status = 429
    code_default = "RATE_LIMITED"
    title_default = "Too many requests"
    meaning = "A rate limit rule rejected the request. The policies member names the violated rules."
    action = "Wait for the number of seconds in Retry-After, then retry."


class InternalError(Problem):
    """500 Internal server error."""

    status = 500
    code_default = "INTERNAL_ERROR"
    title_default = "Internal server error"
    meaning = (
        "The server failed while handling the request. Nothing about the failure is sent;"
        " the server log holds it under the response's trace id."
    )
    action = "Retry later if the request is idempotent; report the trace_id to the API's operators."


class UpstreamUnavailable(Problem):
    """502 Upstream unavailable."""

    status = 502
    code_default = "UPSTREAM_UNAVAILABLE"
    title_default = "Upstream unavailable"
    meaning = "The gateway could not connect to the upstream API."
    action = "Retry later; operators should check the upstream service."


class DependencyUnavailable(Problem):
    """503 Dependency unavailable."""

    status = 503
    code_default = "DEPENDENCY_UNAVAILABLE"
    title_default = "Dependency unavailable"
    meaning = "A store bastion needs (Redis, PostgreSQL, SQLite) is unreachable and the policy is closed."
    action = "Retry after Retry-After seconds."


class UpstreamTimeout(Problem):
    """504 Upstream timeout."""

    status = 504
    code_default = "UPSTREAM_TIMEOUT"
    title_default = "Upstream timeout"
    meaning = "The upstream API did not answer within the gateway's timeout."
    action = "Retry later if the request is idempotent."


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
}


def status_phrase(status: int) -> str:
    """The reason phrase for ``status``, for problems built from bare status codes."""
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_for_status(
    status: int, detail: str | None = None, headers: Mapping[str, str] | None = None
) -> Problem:
    """A problem for a bare HTTP status (a framework's ``HTTPException``, an upstream error).

    Statuses with a registered generic code get it; other 4xx become ``CLIENT_ERROR``
    and other 5xx ``INTERNAL_ERROR``, keeping the original status.
    """
    code = _GENERIC_BY_STATUS.get(status)
    if code is None:
        code = "INTERNAL_ERROR" if status >= 500 else "CLIENT_ERROR"
        title = status_phrase(status)
    else:
        title = _REGISTRY[code].title
    return Problem(detail, code=code, title=title, status=status, headers=headers)


class ClientError(Problem):
    """4xx Client error: a framework or upstream answered with a status no other code covers."""

    status = 400
    code_default = "CLIENT_ERROR"
    title_default = "Client error"
    meaning = (
        "The application answered with a 4xx status that has no more specific code "
        "(for example 410 or 418); the status and title are the application's."
    )
    action = "Read the detail and the status; do not retry unchanged."


class IdempotencyOutcomeUnknown(Problem):
    """500 Outcome of the request with this idempotency key unknown."""

    status = 500
    code_default = "IDEMPOTENCY_OUTCOME_UNKNOWN"
    title_default = "Outcome of the request with this idempotency key unknown"
    meaning = (
        "An earlier attempt with this key stopped while it ran (its process died) and"
        " idempotency.on_lease_expired is refuse: it may or may not have taken effect, so it is"
        " not run again. lost_trace_id names that attempt in the server's logs."
    )
    action = (
        "Check whether the operation took effect (the API's operators can, with lost_trace_id);"
        " do not retry with this key."
    )


_GENERIC_BY_STATUS: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "UNPROCESSABLE_CONTENT",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    502: "UPSTREAM_UNAVAILABLE",
    503: "DEPENDENCY_UNAVAILABLE",
    504: "UPSTREAM_TIMEOUT",
}


@dataclass(frozen=True, slots=True)
class RenderedProblem:
    """A problem ready to send: status, headers as ASGI byte pairs, and the body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def render(
    problem: Problem,
    *,
    type_base: str,
    trace_id: str,
    instance: str | None,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> RenderedProblem:
    """Render ``problem`` as an ``application/problem+json`` response.

    This is the one place problems become bytes; guards and adapters all call it.
    """
    body = orjson.dumps(problem.to_dict(type_base=type_base, trace_id=trace_id, instance=instance))
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in problem.headers.items())
    headers.extend(extra_headers)
    return RenderedProblem(problem.status, headers, body)


__all__ = [
    "FIELD_CODES",
    "BadRequest",
    "ClientError",
    "Conflict",
    "DependencyUnavailable",
    "ErrorCode",
    "Forbidden",
    "IdempotencyKeyInvalid",
    "IdempotencyKeyMissing",
    "IdempotencyKeyReused",
    "IdempotencyRequestInProgress",
    "InternalError",
    "MalformedBody",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "Problem",
    "RateLimited",
    "RenderedProblem",
    "Unauthorized",
    "UnprocessableContent",
    "UnsupportedMediaType",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "ValidationFailed",
    "error_codes",
    "problem_for_status",
    "register_code",
    "render",
    "type_uri",
]
