"""``errors.normalize_upstream``: upstream error pages become problems (sans-I/O).

An Express HTML error page, a Spring whitelabel page or a stack trace tells a
client nothing it can act on and tells an attacker about the stack. With the
option on, an upstream 4xx/5xx whose body is not already a problem is replaced
by a problem of the same status carrying the request's trace id; the original
goes to the log only.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from bastion.asgi import Headers
from bastion.problems import PROBLEM_CONTENT_TYPE, Problem, RenderedProblem, problem_for_status, render

# Upstream response headers a client still needs on the replacement problem.
_KEPT_ON_REPLACEMENT = frozenset(
    {
        b"allow",
        b"retry-after",
        b"www-authenticate",
        b"ratelimit",
        b"ratelimit-policy",
        b"x-ratelimit-limit",
        b"x-ratelimit-remaining",
        b"x-ratelimit-reset",
        b"set-cookie",
        b"vary",
    }
)


def content_type(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The media type of a response (lower case, without parameters), or ``b""``."""
    for key, value in headers:
        if key == b"content-type":
            return value.split(b";", 1)[0].strip().lower()
    return b""


def is_problem(media_type: bytes, body: bytes, status: int) -> bool:
    """Whether an error body already is a problem.

    ``application/problem+json`` is one by definition. A JSON object served as
    ``application/json`` counts too when it has the problem members (``status``
    equal to the response's, and ``title`` or ``type``): some frameworks render
    RFC 9457 bodies under the plain JSON type.
    """
    if media_type == PROBLEM_CONTENT_TYPE:
        return True
    if media_type != b"application/json" or not body:
        return False
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return (
        isinstance(data, dict)
        and data.get("status") == status
        and (isinstance(data.get("title"), str) or isinstance(data.get("type"), str))
    )


def needs_normalizing(status: int, media_type: bytes) -> bool:
    """Whether a response must be read to decide (an error that is not declared a problem)."""
    return status >= 400 and media_type != PROBLEM_CONTENT_TYPE


def replacement(
    status: int,
    upstream_headers: Headers,
    *,
    type_base: str,
    trace_id: str,
    instance: str | None,
) -> tuple[Problem, RenderedProblem]:
    """The problem that replaces an upstream error response, rendered."""
    problem = problem_for_status(
        status,
        detail=f"The upstream API answered {status}; its response was replaced by this problem.",
    )
    kept = [(k, v) for k, v in upstream_headers if k in _KEPT_ON_REPLACEMENT]
    rendered = render(problem, type_base=type_base, trace_id=trace_id, instance=instance, extra_headers=kept)
    return problem, rendered
