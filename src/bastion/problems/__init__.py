"""RFC 9457 problems: the exception hierarchy, the error-code registry and the one renderer.

Every error bastion produces, and every error an application raises through it,
is a :class:`Problem`. A problem carries a stable ``code`` that clients can
branch on; the ``type`` URI is derived from it and ``errors.type_base``.

The package holds the registry (:mod:`~bastion.problems.codes`), the base class
(:mod:`~bastion.problems.base`), the catalogue of problem classes
(:mod:`~bastion.problems.catalogue`), documentation links (:mod:`~bastion.problems.links`)
and rendering (:mod:`~bastion.problems.rendering`);
import every name from ``bastion.problems``.
"""

from __future__ import annotations

from bastion.problems.base import Problem
from bastion.problems.catalogue import (
    AmbiguousRequest,
    ApiKeyInvalid,
    BadRequest,
    ClientError,
    ConfigRejected,
    Conflict,
    DependencyUnavailable,
    Forbidden,
    HeadersTooLarge,
    IdempotencyKeyInvalid,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    IdempotencyOutcomeUnknown,
    IdempotencyRequestInProgress,
    InjectedFault,
    InternalError,
    MalformedBody,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    TooManyConnections,
    Unauthorized,
    UnprocessableContent,
    UnsupportedMediaType,
    UpstreamTimeout,
    UpstreamUnavailable,
    ValidationFailed,
    problem_for_status,
    status_phrase,
)
from bastion.problems.codes import (
    FIELD_CODES,
    ErrorCode,
    error_code,
    error_codes,
    is_problem_code,
    register_code,
    type_uri,
)
from bastion.problems.links import (
    DEFAULT_DOCS_URL,
    ProblemLinks,
    check_docs_url,
    code_slug,
)
from bastion.problems.rendering import (
    MAX_BODY_BYTES,
    MAX_INSTANCE_CHARS,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    PROBLEM_CONTENT_TYPE,
    RenderedProblem,
    escape_instance,
    render,
    request_instance,
)

__all__ = [
    "DEFAULT_DOCS_URL",
    "FIELD_CODES",
    "MAX_BODY_BYTES",
    "MAX_INSTANCE_CHARS",
    "MAX_NAME_CHARS",
    "MAX_TEXT_CHARS",
    "PROBLEM_CONTENT_TYPE",
    "AmbiguousRequest",
    "ApiKeyInvalid",
    "BadRequest",
    "ClientError",
    "ConfigRejected",
    "Conflict",
    "DependencyUnavailable",
    "ErrorCode",
    "Forbidden",
    "HeadersTooLarge",
    "IdempotencyKeyInvalid",
    "IdempotencyKeyMissing",
    "IdempotencyKeyReused",
    "IdempotencyOutcomeUnknown",
    "IdempotencyRequestInProgress",
    "InjectedFault",
    "InternalError",
    "MalformedBody",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "Problem",
    "ProblemLinks",
    "RateLimited",
    "RenderedProblem",
    "RequestTimeout",
    "TooManyConnections",
    "Unauthorized",
    "UnprocessableContent",
    "UnsupportedMediaType",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "ValidationFailed",
    "check_docs_url",
    "code_slug",
    "error_code",
    "error_codes",
    "escape_instance",
    "is_problem_code",
    "problem_for_status",
    "register_code",
    "render",
    "request_instance",
    "status_phrase",
    "type_uri",
]
