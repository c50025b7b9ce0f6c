"""Response validation in shadow mode: mismatches are logged and counted, responses untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from bastion import Bastion
from bastion.asgi import Receive, Scope, Send
from tests.support import LogCapture
from tests.validation.helpers import client, write_spec

SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "t", "version": "1"},
    "paths": {
        "/users/{id}": {
            "get": {
                "operationId": "getUser",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {
                    "200": {
                        "description": "the user",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/User"}}},
                    },
                    "default": {"$ref": "#/components/responses/Problem"},
                },
            }
        }
    },
    "components": {
        "responses": {
            "Problem": {
                "description": "a problem",
                "content": {"application/problem+json": {"schema": {"type": "object", "required": ["code"]}}},
            }
        },
        "schemas": {
            "User": {
                "type": "object",
                "required": ["id", "email"],
                "properties": {
                    "id": {"type": "integer", "readOnly": True},
                    "email": {"type": "string", "format": "email"},
                    "password": {"type": "string", "writeOnly": True},
                },
            }
        },
    },
}

RESPONSES = {
    1: (200, {"id": 1, "email": "a@b.co"}),
    2: (200, {"id": "two", "email": "leaked-secret", "password": "hunter2"}),
    3: (404, {"detail": "no code"}),
}


async def users_app(scope: Scope, receive: Receive, send: Send) -> None:
    status, body = RESPONSES[int(scope["path"].rsplit("/", 1)[1])]
    media = b"application/json" if status == 200 else b"application/problem+json"
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", media)]})
    raw = orjson.dumps(body)
    await send({"type": "http.response.body", "body": raw[:5], "more_body": True})
    await send({"type": "http.response.body", "body": raw[5:]})


def build(tmp_path: Path, enabled: bool = True) -> tuple[Bastion, LogCapture]:
    logs = LogCapture()
    config: dict[str, Any] = {
        "store": "memory://",
        "openapi": str(write_spec(tmp_path, SPEC)),
        "validation": {"responses": {"enabled": enabled, "sample_rate": 1.0}},
    }
    return Bastion(users_app, config, env={}, log_stream=logs), logs


def mismatches(logs: LogCapture) -> list[dict[str, Any]]:
    return [r for r in logs.records() if r.get("event") == "response does not match the description"]


async def test_mismatching_responses_are_logged_and_counted_not_altered(tmp_path: Path) -> None:
    app, logs = build(tmp_path)
    async with client(app) as http:
        good = await http.get("/users/1")
        bad = await http.get("/users/2")
        problem = await http.get("/users/3")
        metrics = (await http.get("/metrics")).text
    assert good.json() == RESPONSES[1][1]
    assert bad.status_code == 200 and bad.json() == RESPONSES[2][1]
    assert problem.status_code == 404
    found = mismatches(logs)
    assert [(r["operation"], r["status"]) for r in found] == [("getUser", 200), ("getUser", 404)]
    entries = {(e["code"], e["pointer"]) for e in found[0]["errors"]}
    assert entries == {("TYPE_MISMATCH", "/id"), ("INVALID_FORMAT", "/email"), ("NOT_ALLOWED", "/password")}
    assert all(e["in"] == "body" for e in found[0]["errors"])
    assert "leaked-secret" not in str(found) and "hunter2" not in str(found)
    assert [(e["code"], e["pointer"]) for e in found[1]["errors"]] == [("REQUIRED", "/code")]
    assert (
        'bastion_response_validation_failures_total{code="TYPE_MISMATCH",operation="getUser"} 1.0' in metrics
    )


async def test_off_by_default(tmp_path: Path) -> None:
    app, logs = build(tmp_path, enabled=False)
    async with client(app) as http:
        assert (await http.get("/users/2")).status_code == 200
    assert mismatches(logs) == []
