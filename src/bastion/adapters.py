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
from bastion.problems import Problem, ValidationFailed, problem_for_status, render, request_instance
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
        entry["detail"] = str(error.get("msg", "is invalid"))
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


async def _http_exception(request: Any, exc: Any) -> Any:
    detail = exc.detail if isinstance(exc.detail, str) else None
    headers = dict(exc.headers) if getattr(exc, "headers", None) else None
    return _response(request, problem_for_status(exc.status_code, detail, headers))


async def _problem(request: Any, exc: Any) -> Any:
    if exc.status >= 500:
        # Let it reach bastion's boundary, which logs it with the trace id.
        raise exc
    return _response(request, exc)


async def _request_validation(request: Any, exc: Any) -> Any:
    errors = fastapi_errors(exc.errors())
    detail = f"{len(errors)} problem(s) in the request"
    return _response(request, ValidationFailed(detail, errors=errors))


def install_problem_handlers(app: Any) -> bool:
    """Register problem handlers on a Starlette or FastAPI application.

    Returns ``False`` (and changes nothing) when ``app`` is not one.
    """
    add = getattr(app, "add_exception_handler", None)
    if add is None:
        return False
    try:
        from starlette.exceptions import HTTPException
    except ImportError:  # pragma: no cover - starlette is a dependency
        return False
    add(HTTPException, _http_exception)
    add(Problem, _problem)
    try:
        from fastapi.exceptions import RequestValidationError
    except ImportError:
        pass
    else:
        add(RequestValidationError, _request_validation)
    return True
