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
from urllib.parse import quote, quote_from_bytes

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


def is_problem_code(code: str) -> bool:
    """Whether ``code`` is a valid problem code: UPPER_SNAKE_CASE, at most 64 characters."""
    return _CODE_RE.match(code) is not None


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


class HeadersTooLarge(Problem):
    """431 Request header fields too large."""

    status = 431
    code_default = "HEADERS_TOO_LARGE"
    title_default = "Request header fields too large"
    meaning = (
        "The request head is larger than the server accepts (gateway.max_header_bytes, "
        "gateway.max_headers); the connection is closed."
    )
    action = "Send fewer or smaller headers (large cookies and tokens are the usual cause)."


class RequestTimeout(Problem):
    """408 Request timeout."""

    status = 408
    code_default = "REQUEST_TIMEOUT"
    title_default = "Request timeout"
    meaning = (
        "The request head did not arrive within gateway.header_timeout, or its body stalled"
        " longer than gateway.body_timeout; the connection is closed."
    )
    action = "Send the request without pauses; retry on a new connection."


class TooManyConnections(Problem):
    """503 Too many connections."""

    status = 503
    code_default = "TOO_MANY_CONNECTIONS"
    title_default = "Too many connections"
    meaning = "The server process holds gateway.max_connections connections already; this one is closed."
    action = "Retry after Retry-After seconds, ideally on a kept-alive connection."


class AmbiguousRequest(Problem):
    """400 Ambiguous request."""

    status = 400
    code_default = "AMBIGUOUS_REQUEST"
    title_default = "Ambiguous request"
    meaning = (
        "The request can be read in more than one way, and frameworks differ on which reading"
        " wins: a parameter, header, cookie or form field declared as one value is repeated"
        " (also as `name[]`), a cookie value is percent-encoded, or several Cookie headers"
        " carry a declared cookie. The detail names where."
    )
    action = "Send each single-valued parameter once, in one form; do not retry unchanged."


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
        "The server failed while handling the request, or the application (or upstream) answered"
        " a 5xx that was not a problem (errors.normalize_upstream); the status is then the"
        " original one. Nothing about the failure is sent; the server log holds it under the"
        " response's trace id."
    )
    action = "Retry later if the request is idempotent; report the trace_id to the API's operators."


class UpstreamUnavailable(Problem):
    """502 Upstream unavailable."""

    status = 502
    code_default = "UPSTREAM_UNAVAILABLE"
    title_default = "Upstream unavailable"
    meaning = (
        "The gateway could not connect to the upstream API, or the API answered 502 with a body"
        " that was not a problem (replaced by errors.normalize_upstream and logged)."
    )
    action = "Retry later; operators should check the upstream service."


class DependencyUnavailable(Problem):
    """503 Dependency unavailable."""

    status = 503
    code_default = "DEPENDENCY_UNAVAILABLE"
    title_default = "Dependency unavailable"
    meaning = (
        "A store bastion needs (Redis, PostgreSQL, SQLite) is unreachable and the policy is"
        " closed, or the API answered 503 with a body that was not a problem (replaced by"
        " errors.normalize_upstream and logged)."
    )
    action = "Retry after Retry-After seconds."


class UpstreamTimeout(Problem):
    """504 Upstream timeout."""

    status = 504
    code_default = "UPSTREAM_TIMEOUT"
    title_default = "Upstream timeout"
    meaning = (
        "The upstream API did not answer within the gateway's timeout, or the API answered 504"
        " with a body that was not a problem (replaced by errors.normalize_upstream and logged)."
    )
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
    "CONTROL_CHARACTER": (
        "A string or parameter value holds a NUL or another C0 control character (other than"
        " tab, CR and LF) where its schema or parameter does not allow them"
        " (`x-bastion-allow-control-characters: true`)."
    ),
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
        "(for example 410 or 418); the status and title are the application's. With "
        "errors.normalize_upstream: all, also a 4xx page that was not a problem."
    )
    action = "Read the detail and the status; do not retry unchanged."


class ApiKeyInvalid(Problem):
    """401 API key invalid."""

    status = 401
    code_default = "API_KEY_INVALID"
    title_default = "API key invalid"
    meaning = "The request's API key is not one the API knows (`clients.unknown_keys: reject`)."
    action = "Send a valid API key, or none; do not retry with the same key."


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


#: A rendered problem body is never larger than this: trailing ``errors[]`` entries are
#: dropped first (and counted in ``errors_truncated``), then extension members.
MAX_BODY_BYTES = 16 * 1024
#: ``instance`` is cut to this many characters, after escaping.
MAX_INSTANCE_CHARS = 1024
#: Names, fields and pointers in ``errors[]`` are cut to this many characters.
MAX_NAME_CHARS = 128
#: ``title`` and ``detail`` are cut to this (and the other strings of ``errors[]`` entries
#: when the body would be larger than :data:`MAX_BODY_BYTES`).
MAX_TEXT_CHARS = 1024

# What may stand unescaped in ``instance``: RFC 3986's unreserved and reserved
# characters, and ``%`` so that the raw path's own escapes stay as they are.
_INSTANCE_SAFE = "-._~!#$&'()*+,/:;=?@[]%"
_INSTANCE_PLAIN = re.compile(rf"[A-Za-z0-9\-._~!#$&'()*+,/:;=?@\[\]%]{{0,{MAX_INSTANCE_CHARS}}}")
_NAME_KEYS = frozenset({"field", "pointer", "name"})


def _cut_instance(quoted: str) -> str:
    if len(quoted) <= MAX_INSTANCE_CHARS:
        return quoted
    cut = quoted[:MAX_INSTANCE_CHARS]
    # Never end inside a %XX escape.
    escape = cut.find("%", MAX_INSTANCE_CHARS - 2)
    return cut if escape == -1 else cut[:escape]


def escape_instance(instance: str) -> str:
    """``instance`` made safe to echo: percent-encoded outside RFC 3986's characters, bounded.

    Control characters, spaces, quotes, angle brackets and non-ASCII characters (as
    UTF-8) are percent-encoded; existing escapes are kept, so escaping twice changes
    nothing. The result has at most :data:`MAX_INSTANCE_CHARS` characters.
    """
    if _INSTANCE_PLAIN.fullmatch(instance):
        return instance
    return _cut_instance(quote(instance, safe=_INSTANCE_SAFE, errors="surrogatepass"))


def request_instance(scope: Mapping[str, Any]) -> str:
    """The ``instance`` of a problem about an ASGI request: its raw path, escaped and bounded.

    The raw path (as the client sent it) is used where the server gives it, so that a
    decoded ``%0D%0A`` never comes back as a line break.
    """
    raw = scope.get("raw_path")
    if isinstance(raw, bytes) and raw:
        # ASGI keeps the query out of raw_path; a server that does not must not make it echoed.
        return _cut_instance(quote_from_bytes(raw.partition(b"?")[0], safe=_INSTANCE_SAFE))
    return escape_instance(str(scope.get("path", "")))


def _cut(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit]
    return value


def _bounded_names(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    """``entry``, or a copy with its names and pointers cut to :data:`MAX_NAME_CHARS`."""
    for key in _NAME_KEYS:
        value = entry.get(key)
        if isinstance(value, str) and len(value) > MAX_NAME_CHARS:
            return {k: _cut(v, MAX_NAME_CHARS) if k in _NAME_KEYS else v for k, v in entry.items()}
    return entry


def _bounded_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: _cut(value, MAX_NAME_CHARS if key in _NAME_KEYS else MAX_TEXT_CHARS)
        for key, value in entry.items()
    }


def _valid_text(value: Any) -> Any:
    """``value`` with every string made encodable (lone surrogates replaced)."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, Mapping):
        return {_valid_text(k): _valid_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_valid_text(v) for v in value]
    return value


def _dumps(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        # Only lone surrogates (from a client's bytes decoded with surrogateescape) get
        # here on the common path; anything else unserialisable is the caller's error.
        return orjson.dumps(_valid_text(body))


def _with_errors(body: dict[str, Any], entries: list[bytes]) -> bytes:
    """``body`` with as many of the encoded ``entries`` as fit in :data:`MAX_BODY_BYTES`."""
    data = _dumps(body)
    if not entries:
        return data
    # Compact JSON: the members cost exactly these bytes, so the number of entries that
    # fit is known before the body is put together.
    room = MAX_BODY_BYTES - len(data) - len(',"errors":[]') - len(',"errors_truncated":') - 6
    kept = 0
    for entry in entries:
        room -= len(entry) + 1
        if room < 0:
            break
        kept += 1
    data = data[:-1] + b',"errors":[' + b",".join(entries[:kept]) + b"]"
    if kept < len(entries):
        data += b',"errors_truncated":' + str(len(entries) - kept).encode()
    return data + b"}"


def _encode(body: dict[str, Any]) -> bytes:
    """The problem body as JSON of at most :data:`MAX_BODY_BYTES`, whatever its members hold."""
    errors = body.get("errors")
    if errors:
        body["errors"] = [_bounded_names(entry) for entry in errors]
    data = _dumps(body)
    if len(data) <= MAX_BODY_BYTES:
        return data
    # Too large: fit the errors[] entries one by one (their text cut too), then, if that
    # is not enough, drop the extension members and keep little of the title and detail
    # (escaped control characters take six bytes a character).
    body.pop("errors", None)
    entries = [_dumps(_bounded_entry(entry)) for entry in errors] if errors else []
    data = _with_errors(body, entries)
    if len(data) <= MAX_BODY_BYTES:
        return data
    standard = {k: _cut(v, _LAST_RESORT_CHARS) for k, v in body.items() if k in _STANDARD_MEMBERS}
    standard["extensions_truncated"] = len(body) - len(standard)
    return _with_errors(standard, entries)


_STANDARD_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "code", "trace_id"})
_LAST_RESORT_CHARS = 256


def render(
    problem: Problem,
    *,
    type_base: str,
    trace_id: str,
    instance: str | None,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> RenderedProblem:
    """Render ``problem`` as an ``application/problem+json`` response.

    This is the one place problems become bytes; guards and adapters all call it. Here
    every problem gets the same bounds on echoed text, whoever built it: ``instance``
    escaped (:func:`escape_instance`), names and pointers in ``errors[]`` cut to
    :data:`MAX_NAME_CHARS`, other text to :data:`MAX_TEXT_CHARS`, and the body to
    :data:`MAX_BODY_BYTES`.
    """
    body = problem.to_dict(
        type_base=type_base,
        trace_id=trace_id,
        instance=escape_instance(instance) if instance is not None else None,
    )
    if len(problem.title) > MAX_TEXT_CHARS:
        body["title"] = problem.title[:MAX_TEXT_CHARS]
    if problem.detail is not None and len(problem.detail) > MAX_TEXT_CHARS:
        body["detail"] = problem.detail[:MAX_TEXT_CHARS]
    data = _encode(body)
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE),
        (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"),
    ]
    headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in problem.headers.items())
    headers.extend(extra_headers)
    return RenderedProblem(problem.status, headers, data)


__all__ = [
    "FIELD_CODES",
    "MAX_BODY_BYTES",
    "MAX_INSTANCE_CHARS",
    "MAX_NAME_CHARS",
    "MAX_TEXT_CHARS",
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
    "escape_instance",
    "problem_for_status",
    "register_code",
    "render",
    "request_instance",
    "type_uri",
]
