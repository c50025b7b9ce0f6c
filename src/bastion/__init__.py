"""bastion: idempotency keys, RFC 9457 errors, rate limits and OpenAPI validation for HTTP APIs."""

from bastion.adapters import install_problem_handlers
from bastion.asgi import RequestContext, context_of
from bastion.config import Config, ConfigError, load_config
from bastion.problems import (
    BadRequest,
    ClientError,
    Conflict,
    DependencyUnavailable,
    Forbidden,
    IdempotencyKeyInvalid,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    IdempotencyRequestInProgress,
    InternalError,
    MalformedBody,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Problem,
    RateLimited,
    Unauthorized,
    UnprocessableContent,
    UnsupportedMediaType,
    UpstreamTimeout,
    UpstreamUnavailable,
    ValidationFailed,
)
from bastion.stack import Bastion
from bastion.tracing import add_trace_id, current_trace_id

__version__ = "0.1.0"

__all__ = [
    "BadRequest",
    "Bastion",
    "ClientError",
    "Config",
    "ConfigError",
    "Conflict",
    "DependencyUnavailable",
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
    "RequestContext",
    "Unauthorized",
    "UnprocessableContent",
    "UnsupportedMediaType",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "ValidationFailed",
    "__version__",
    "add_trace_id",
    "context_of",
    "current_trace_id",
    "install_problem_handlers",
    "load_config",
]
