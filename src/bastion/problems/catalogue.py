"""The catalogue of problem classes, one per registered code, and problems for bare statuses."""

from __future__ import annotations

from collections.abc import Mapping

from bastion.problems.base import Problem
from bastion.problems.codes import error_code


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


class ConfigRejected(Problem):
    """422 The admin change would make an invalid configuration."""

    status = 422
    code_default = "CONFIG_REJECTED"
    title_default = "Configuration change rejected"
    meaning = (
        "An admin API change would make a configuration bastion cannot run (an unknown rule in a "
        "consumer's limits, a bad rate, a tier that fits no request). errors[] names each key and reason."
    )
    action = "Fix the change as each error says; nothing was changed."


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


class InjectedFault(Problem):
    """An injected failure (``faults``): the status comes from the fault's rule or request header."""

    status = 503
    code_default = "INJECTED_FAULT"
    title_default = "Injected fault"
    meaning = (
        "Fault injection is on (the faults section, docs/faults.md) and this request was chosen to"
        " fail on purpose, by a rule or by its Bastion-Fault-Abort header; nothing went wrong."
        " The status is the fault's."
    )
    action = "Handle it as you would the same status from a real failure; retry if the request is idempotent."


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
        title = error_code(code).title
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
