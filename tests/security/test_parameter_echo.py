"""Query parameters: an unknown name is echoed only cut, and a parameter may allow control characters."""

from __future__ import annotations

from pathlib import Path

from tests.validation.helpers import behind_bastion, client, write_spec

SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "params", "version": "1"},
    "paths": {
        "/search": {
            "get": {
                "parameters": [
                    {"name": "q", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "raw",
                        "in": "query",
                        "x-bastion-allow-control-characters": True,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {"200": {"description": "ok"}},
            }
        }
    },
}


async def test_an_unknown_query_name_is_echoed_at_most_128_characters(tmp_path: Path) -> None:
    app, _ = behind_bastion(write_spec(tmp_path, SPEC), validation={"unknown_query": "reject"})
    name = "n" * 30_000
    async with client(app) as http:
        response = await http.get(f"/search?{name}=1")
    assert response.status_code == 422
    assert len(response.content) < 2_000
    assert "n" * 129 not in response.text


async def test_a_parameter_may_allow_control_characters(tmp_path: Path) -> None:
    app, _ = behind_bastion(write_spec(tmp_path, SPEC))
    async with client(app) as http:
        refused = await http.get("/search", params={"q": "a\x01b"})
        allowed = await http.get("/search", params={"raw": "a\x01b"})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["code"] == "CONTROL_CHARACTER"
    assert allowed.status_code == 200, allowed.text
