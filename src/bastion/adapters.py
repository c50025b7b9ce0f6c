"""Adapters that turn a framework's own errors into bastion problems.

Starlette and FastAPI answer ``HTTPException`` and FastAPI's ``RequestValidationError``
inside the application, before bastion sees anything. :func:`install_problem_handlers`
registers handlers that render those as problems with the request's trace id.
:class:`bastion.Bastion` calls it itself when it wraps a Starlette or FastAPI
application directly (``errors.framework_adapters``, on by default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bastion.asgi import context_of
from bastion.problems import (
    MalformedBody,
    Problem,
    ValidationFailed,
    is_problem_code,
    problem_for_status,
    render,
    request_instance,
)
from bastion.tracing import new_trace_id

# FastAPI's error types, mapped onto bastion's field codes.
_FASTAPI_CODES: dict[str, str] = {
    "missing": "REQUIRED",
    "extra_forbidden": "NOT_ALLOWED",
    "string_too_long": "TOO_LONG",
    "string_too_short": "TOO_SHORT",
    "too_long": "TOO_LONG",
    "too_short": "TOO_SHORT",
    "string_pattern_mismatch": "PATTERN_MISMATCH",
    "greater_than": "OUT_OF_RANGE",
    "greater_than_equal": "OUT_OF_RANGE",
    "less_than": "OUT_OF_RANGE",
    "less_than_equal": "OUT_OF_RANGE",
    "multiple_of": "OUT_OF_RANGE",
    "enum": "ENUM_MISMATCH",
    "literal_error": "ENUM_MISMATCH",
    "value_error": "INVALID_FORMAT",
    "uuid_parsing": "INVALID_FORMAT",
    "uuid_type": "INVALID_FORMAT",
    "date_parsing": "INVALID_FORMAT",
    "datetime_parsing": "INVALID_FORMAT",
    "datetime_from_date_parsing": "INVALID_FORMAT",
    "url_parsing": "INVALID_FORMAT",
    "json_invalid": "MALFORMED",
}

_LOCATIONS = {
    "body": "body",
    "query": "query",
    "path": "path",
    "header": "header",
    "cookie": "cookie",
}


def _escape_pointer(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _safe_detail(error: Mapping[str, Any]) -> str:
    """pydantic's message for an error, unless it quotes the submitted value (then a plain one).

    Built-in messages describe the rule; a custom validator's may include the input
    (``f"{v} is not a valid coupon"``), and inputs are passwords and tokens too.
    """
    message = str(error.get("msg", ""))[:200] or "is invalid"
    value = error.get("input")
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        shown = str(value)
        if shown and shown in message:
            return f"is invalid ({error.get('type', 'value_error')})"
    return message


def fastapi_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Map FastAPI/pydantic error entries onto bastion's ``errors[]``, without input values.

    FastAPI's default answer echoes each submitted value under ``input``; passwords
    and tokens live in bodies, so that member is dropped here.
    """
    mapped: list[dict[str, Any]] = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ())]
        where = _LOCATIONS.get(loc[0], "body") if loc else "body"
        rest = loc[1:] if loc and loc[0] in _LOCATIONS else loc
        kind = str(error.get("type", ""))
        code = _FASTAPI_CODES.get(kind)
        if code is None:
            code = "TYPE_MISMATCH" if kind.endswith(("_type", "_parsing")) else "INVALID"
        entry: dict[str, Any] = {"code": code, "in": where}
        if where == "body":
            entry["pointer"] = "/" + "/".join(_escape_pointer(p) for p in rest) if rest else ""
        else:
            entry["name"] = rest[0] if rest else ""
        entry["field"] = ".".join(rest) if rest else ""
        entry["detail"] = _safe_detail(error)
        mapped.append(entry)
    return mapped


def _response(request: Any, problem: Problem) -> Any:
    from starlette.responses import Response

    ctx = context_of(request.scope)
    trace_id = ctx.trace_id if ctx is not None else new_trace_id()
    type_base = ctx.type_base if ctx is not None else ""
    if ctx is not None:
        ctx.problem_code = problem.code
    rendered = render(
        problem, type_base=type_base, trace_id=trace_id, instance=request_instance(request.scope)
    )
    response = Response(content=rendered.body, status_code=rendered.status)
    response.raw_headers = list(rendered.headers)
    return response


#: Members of an ``HTTPException`` detail mapping that a problem already has.
_RESERVED_MEMBERS = frozenset({"type", "title", "status", "instance", "trace_id", "errors"})


def _problem_from_http_exception(exc: Any) -> Problem:
    """A problem for a framework's ``HTTPException``, keeping what the handler meant to say.

    A string detail stays the detail; a mapping detail (``{"code": ..., "detail": ...}``)
    gives its ``code`` (UPPER_SNAKE_CASE), its ``detail`` or ``message`` and, as extension
    members, the rest. A 5xx keeps nothing of it: a 5xx body says nothing about internals.
    """
    headers = dict(exc.headers) if getattr(exc, "headers", None) else None
    status = int(exc.status_code)
    if status >= 500:
        return problem_for_status(status, None, headers)
    raw = exc.detail
    if not isinstance(raw, Mapping):
        return problem_for_status(status, raw if isinstance(raw, str) else None, headers)
    base = problem_for_status(status, None, headers)
    text = raw.get("detail", raw.get("message"))
    code = raw.get("code")
    extensions = {
        str(k): v
        for k, v in raw.items()
        if k not in ("code", "detail", "message") and str(k) not in _RESERVED_MEMBERS
    }
    return Problem(
        text if isinstance(text, str) else None,
        code=code if isinstance(code, str) and is_problem_code(code) else base.code,
        title=base.title,
        status=status,
        headers=headers,
        extensions=extensions,
    )


async def _http_exception(request: Any, exc: Any) -> Any:
    return _response(request, _problem_from_http_exception(exc))


async def _problem(request: Any, exc: Any) -> Any:
    if exc.status >= 500:
        # Let it reach bastion's boundary, which logs it with the trace id.
        raise exc
    return _response(request, exc)


def _line_and_column(body: bytes, position: int) -> tuple[int, int]:
    """1-based line and column of character ``position`` of a UTF-8 body."""
    text = body.decode("utf-8", "replace")[:position]
    line = text.count("\n") + 1
    return line, position - (text.rfind("\n") + 1) + 1


async def _request_validation(request: Any, exc: Any) -> Any:
    raw_errors = exc.errors()
    for error in raw_errors:
        loc = error.get("loc", ())
        if error.get("type") == "json_invalid" and len(loc) == 2 and isinstance(loc[1], int):
            line, column = _line_and_column(await request.body(), loc[1])
            return _response(
                request, MalformedBody(detail=f"the body is not valid JSON (line {line}, column {column})")
            )
    errors = fastapi_errors(raw_errors)
    detail = f"{len(errors)} problem(s) in the request"
    return _response(request, ValidationFailed(detail, errors=errors))


def _defaults() -> frozenset[Any]:
    """FastAPI's own handlers, which bastion's replace (a user's own handler is kept)."""
    try:
        from fastapi import exception_handlers
    except ImportError:
        return frozenset()
    return frozenset(
        getattr(exception_handlers, name)
        for name in ("http_exception_handler", "request_validation_exception_handler")
        if hasattr(exception_handlers, name)
    )


def install_problem_handlers(app: Any) -> bool:
    """Register problem handlers on a Starlette or FastAPI application.

    Handlers the application registered itself win: bastion adds one only where there is
    none, or only FastAPI's default. Returns ``False`` (and changes nothing) when ``app``
    is not a Starlette or FastAPI application.
    """
    add = getattr(app, "add_exception_handler", None)
    if add is None:
        return False
    try:
        from starlette.exceptions import HTTPException
    except ImportError:  # pragma: no cover - starlette is a dependency
        return False
    registered = getattr(app, "exception_handlers", None)
    existing: Mapping[Any, Any] = registered if isinstance(registered, Mapping) else {}
    defaults = _defaults()
    wanted: list[tuple[Any, Any]] = [(HTTPException, _http_exception), (Problem, _problem)]
    try:
        from fastapi.exceptions import RequestValidationError
    except ImportError:
        pass
    else:
        wanted.append((RequestValidationError, _request_validation))
    for exception, handler in wanted:
        current = existing.get(exception)
        if current is None or current in defaults:
            add(exception, handler)
    return True


#: Attributes under which FastAPI keeps the paths of its own documentation pages.
_DOCUMENTATION_ATTRIBUTES = ("openapi_url", "docs_url", "redoc_url", "swagger_ui_oauth2_redirect_url")


def documentation_paths(app: Any) -> frozenset[str]:
    """The paths a framework serves its own API documentation on (FastAPI's ``/docs``,
    ``/redoc``, ``/openapi.json``): never in the description, never hidden by bastion."""
    found = (getattr(app, name, None) for name in _DOCUMENTATION_ATTRIBUTES)
    return frozenset(path for path in found if isinstance(path, str) and path.startswith("/"))
