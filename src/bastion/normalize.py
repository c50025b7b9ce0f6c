"""``errors.normalize_upstream``: error pages become problems (sans-I/O).

An Express HTML error page, a Spring whitelabel page or a stack trace tells a
client nothing it can act on and tells an attacker about the stack. By default
(``true``) a 5xx response whose body is not already a problem is replaced by a
problem of the same status carrying the request's trace id; ``all`` does the same
for 4xx, ``false`` lets every body through. The original goes to the log only.

The gateway's proxy applies this to the upstream's responses, and the boundary to
an application's own responses in middleware mode: both ask :func:`needs_normalizing`
and :func:`replaces`, so the two cannot decide differently.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import orjson

from bastion.asgi import Headers, Message
from bastion.problems import (
    PROBLEM_CONTENT_TYPE,
    Problem,
    ProblemLinks,
    RenderedProblem,
    problem_for_status,
    render,
)

#: The values of ``errors.normalize_upstream``: ``True`` (5xx), ``"all"`` (4xx and 5xx), ``False``.
NormalizePolicy = bool | Literal["all"]

#: How much of an error body the boundary keeps to decide and to log (the gateway's
#: proxy reads ``gateway.normalize_max_bytes`` instead); the rest is discarded.
HELD_BODY_BYTES = 65_536

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
        # A stored 5xx (idempotency.store_statuses) replayed: the client learns it did not run again.
        b"idempotent-replayed",
    }
)


def content_type(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The media type of a response (lower case, without parameters), or ``b""``."""
    for key, value in headers:
        if key.lower() == b"content-type":
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


def needs_normalizing(policy: NormalizePolicy, status: int, media_type: bytes) -> bool:
    """Whether ``policy`` covers this response, so its body must be read to decide.

    Only error statuses (400-599) whose media type does not declare a problem are.
    """
    if not 400 <= status <= 599 or media_type == PROBLEM_CONTENT_TYPE:
        return False
    return policy == "all" if status < 500 else policy is not False


def replaces(policy: NormalizePolicy, status: int, media_type: bytes, body: bytes, *, complete: bool) -> bool:
    """Whether a response is replaced by a problem: covered by ``policy`` and not one already.

    ``body`` is the start of the response, ``complete`` whether it is all of it: a body
    cut off at the read limit is never taken for a problem.
    """
    return needs_normalizing(policy, status, media_type) and not (
        complete and is_problem(media_type, body, status)
    )


def replacement(
    status: int,
    original_headers: Headers,
    *,
    type_base: str | ProblemLinks,
    trace_id: str,
    instance: str | None,
    source: str = "upstream API",
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> tuple[Problem, RenderedProblem]:
    """The problem that replaces an error response, rendered.

    ``source`` names who answered in the detail (the upstream API, the application).
    Of the original headers, only those a client needs to act (``Retry-After``,
    ``Allow``, ``WWW-Authenticate``, rate limit headers, cookies) are kept.
    """
    problem = problem_for_status(
        status,
        detail=f"The {source} answered {status}; its response was replaced by this problem.",
    )
    kept = [(k, v) for k, v in original_headers if k.lower() in _KEPT_ON_REPLACEMENT]
    kept.extend(extra_headers)
    rendered = render(problem, type_base=type_base, trace_id=trace_id, instance=instance, extra_headers=kept)
    return problem, rendered


def log_original(
    logger: Any, trace_id: str, status: int, media_type: bytes, body: bytes, *, truncated: bool
) -> None:
    """Log a replaced response's status, type and (bounded) body under the request's trace id."""
    logger.warning(
        "error response replaced by a problem",
        trace_id=trace_id,
        upstream_status=status,
        upstream_content_type=media_type.decode("latin-1"),
        upstream_body=body.decode("utf-8", "replace"),
        upstream_body_truncated=truncated,
    )


class HeldResponse:
    """An error response held back until the application returns (the boundary's, sans-I/O).

    A response that ``errors.normalize_upstream`` covers (``replaceable``) keeps only its
    first ``limit`` body bytes: enough to decide and to log, since it is replaced unless
    it turns out to be a problem. Any other (a 5xx the policy lets through, held only in
    case an exception follows) keeps its messages up to ``limit`` body bytes, to be sent
    as they came.
    """

    __slots__ = ("chunks", "complete", "limit", "media_type", "messages", "replaceable", "size", "start")

    def __init__(
        self, start: Message, media_type: bytes, *, replaceable: bool, limit: int = HELD_BODY_BYTES
    ) -> None:
        self.start = start
        self.media_type = media_type
        self.replaceable = replaceable
        self.limit = limit
        self.messages: list[Message] = [start]
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False

    def add(self, message: Message) -> bool:
        """Keep a message that followed the response start; whether to stop holding it.

        A response that is not replaceable is held only while it stays within ``limit``
        bytes: past that it should be sent as it came (:meth:`as_sent`) and streamed on.
        """
        body = message.get("body") or b""
        if not self.replaceable:
            self.messages.append(message)
            self.size += len(body)
            return self.size > self.limit
        if message["type"] != "http.response.body":
            return False
        if body and self.size <= self.limit:
            self.chunks.append(body)
        self.size += len(body)
        if not message.get("more_body"):
            self.complete = True
        return False

    @property
    def whole(self) -> bool:
        """Whether the kept body is all of it (the response ended within ``limit``)."""
        return self.complete and self.size <= self.limit

    @property
    def body(self) -> bytes:
        """The kept start of the body (at most ``limit`` bytes)."""
        return b"".join(self.chunks)[: self.limit]

    def as_sent(self) -> list[Message]:
        """The messages to send when the response is not replaced."""
        if not self.replaceable:
            return self.messages
        return [self.start, {"type": "http.response.body", "body": self.body, "more_body": False}]
