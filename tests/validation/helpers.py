"""Helpers for the validation tests: an echo app behind bastion, built from a description."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from bastion import Bastion
from bastion.asgi import SCOPE_KEY, Receive, Scope, Send
from bastion.config import load_config
from bastion.validation.compile import CompiledAPI, compile_description
from bastion.validation.openapi import parse_document
from tests.support import LogCapture

SPECS = Path(__file__).parent / "specs"
CHECKOUT = SPECS / "checkout.yaml"


async def read_body(receive: Receive) -> bytes:
    """The whole request body, as an application reads it."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers 200 with what it saw: the body, and the route bastion found."""
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    ctx = scope.get(SCOPE_KEY)
    seen = {
        "body": body.decode("latin-1"),
        "route": getattr(ctx, "route", None),
        "operation_id": getattr(ctx, "operation_id", None),
        "path_params": getattr(ctx, "path_params", None),
    }
    payload = orjson.dumps(seen)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": payload})


def write_spec(tmp_path: Path, spec: Mapping[str, Any] | str, name: str = "openapi.yaml") -> Path:
    """Write a description (a mapping or YAML text) to a file."""
    path = tmp_path / name
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(dict(spec), sort_keys=False))
    return path


def behind_bastion(spec_path: Path | str, **config: Any) -> tuple[Bastion, LogCapture]:
    """The echo app behind bastion with ``spec_path`` and extra configuration."""
    logs = LogCapture()
    settings: dict[str, Any] = {"store": "memory://", "openapi": str(spec_path)}
    settings.update(config)
    return Bastion(echo_app, settings, env={}, log_stream=logs), logs


def client(app: Any) -> httpx.AsyncClient:
    """An in-process client."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def compile_spec(spec: Mapping[str, Any] | str, **validation: Any) -> CompiledAPI:
    """Compile a description given as a mapping or YAML text."""
    # YAML keeps integers past 64 bits exact (JSON text would go through orjson).
    text = spec if isinstance(spec, str) else yaml.safe_dump(dict(spec), sort_keys=False)
    return compile_description(parse_document(text, "test"), load_config({"validation": validation}, env={}))


def operation(api: CompiledAPI, method: str, template: str) -> Any:
    """The compiled operation ``method template``."""
    for op in api.operations:
        if op.method == method and op.template == template:
            return op
    raise KeyError(f"{method} {template}")


def spec_with(
    *,
    version: str = "3.1.0",
    parameters: list[Any] | None = None,
    body: Any = None,
    media: str = "application/json",
    schemas: Mapping[str, Any] | None = None,
    path: str = "/things",
    method: str = "post",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A one-operation description."""
    operation_: dict[str, Any] = {"operationId": "op", "responses": {"200": {"description": "ok"}}}
    if parameters:
        operation_["parameters"] = parameters
    if body is not None:
        operation_["requestBody"] = {"required": True, "content": {media: {"schema": body}}}
    operation_.update(extra or {})
    spec: dict[str, Any] = {
        "openapi": version,
        "info": {"title": "t", "version": "1"},
        "paths": {path: {method: operation_}},
    }
    if schemas:
        spec["components"] = {"schemas": dict(schemas)}
    return spec


def check_body(
    api: CompiledAPI, body: Any, *, template: str = "/things", method: str = "POST"
) -> list[dict[str, Any]]:
    """The error entries for a JSON body sent to the one operation."""
    op = operation(api, method, template)
    raw = orjson.dumps(body)
    result: list[dict[str, Any]] = op.check(
        {}, b"", [(b"content-type", b"application/json")], raw, b"application/json"
    )
    return result


def refused_for_control_characters(status: int, problem: Any) -> bool:
    """Whether a response is a 422 for control characters only.

    Generators that read a description produce any string it allows, control
    characters included, which bastion refuses unless the description allows them.
    """
    errors = problem.get("errors") if status == 422 and isinstance(problem, dict) else None
    return bool(errors) and all(e.get("code") == "CONTROL_CHARACTER" for e in errors)
