"""A description cannot make bastion fetch a URL or read a file it was not allowed to."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bastion.config import load_config
from bastion.validation.compile import compile_description
from bastion.validation.openapi import OpenAPIError, load_description
from tests.validation.helpers import behind_bastion, write_spec


class _Counting(http.server.ThreadingHTTPServer):
    hits: list[str]
    redirect_to: str | None = None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Counting

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        if self.server.redirect_to is not None:
            self.send_response(302)
            self.send_header("location", self.server.redirect_to)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        body = orjson.dumps({"type": "object", "required": ["id"]})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads the hits instead."""


def _serve() -> Iterator[_Counting]:
    server = _Counting(("127.0.0.1", 0), _Handler)
    server.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[_Counting]:
    """A local HTTP server that counts the requests it gets."""
    yield from _serve()


@pytest.fixture
def other_server() -> Iterator[_Counting]:
    """A second counting server, where a redirect may point."""
    yield from _serve()


def _url(server: _Counting, path: str = "/x") -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def _spec(schema: dict[str, Any]) -> dict[str, Any]:
    content = {"application/json": {"schema": schema}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "refs", "version": "1"},
        "paths": {
            "/things": {
                "post": {"requestBody": {"content": content}, "responses": {"200": {"description": "ok"}}}
            }
        },
    }


SCHEMA_AT = "/paths/~1things/post/requestBody/content/application~1json/schema"


def _compile(path: Path, allow: list[str] | None = None) -> Any:
    description = load_description(path, allow or [])
    return compile_description(description, load_config({}, env={}))


def _error(path: Path, allow: list[str] | None = None) -> OpenAPIError:
    with pytest.raises(OpenAPIError) as info:
        _compile(path, allow)
    return info.value


def test_a_schema_url_is_not_fetched(tmp_path: Path, server: _Counting) -> None:
    url = _url(server)
    path = write_spec(tmp_path, _spec({"$schema": url, "type": "object"}))
    error = _error(path)
    assert server.hits == []
    assert error.source == str(path)
    assert error.pointer == SCHEMA_AT + "/$schema"
    assert url in error.reason
    assert "not allowed" in error.reason


def test_the_guard_stops_at_start_up_without_fetching(tmp_path: Path, server: _Counting) -> None:
    path = write_spec(tmp_path, _spec({"type": "object", "properties": {"a": {"$schema": _url(server)}}}))
    with pytest.raises(OpenAPIError) as info:
        behind_bastion(path)
    assert server.hits == []
    assert info.value.pointer == SCHEMA_AT + "/properties/a/$schema"


def test_content_schema_and_dynamic_refs_are_not_fetched(tmp_path: Path, server: _Counting) -> None:
    for schema, keyword in (
        ({"type": "string", "contentSchema": {"$ref": _url(server)}}, "/contentSchema/$ref"),
        ({"$dynamicRef": _url(server)}, "/$dynamicRef"),
    ):
        error = _error(write_spec(tmp_path, _spec(schema)))
        assert error.pointer == SCHEMA_AT + keyword
    assert server.hits == []


def test_a_file_outside_reads_the_same_whether_it_exists_or_not(tmp_path: Path) -> None:
    def reason(ref: str) -> str:
        schema = {"type": "string", "contentSchema": {"$ref": ref}}
        return _error(write_spec(tmp_path, _spec(schema))).reason.replace(ref, "REF")

    existing = reason("file:///etc/passwd")
    missing = reason("file:///etc/no-such-file-here")
    assert existing == missing
    assert "root" not in existing


def test_relative_and_symlinked_paths_out_of_the_folder_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "api"
    folder.mkdir()
    outside = tmp_path / "outside.json"
    outside.write_text('{"type": "object"}')
    (folder / "link.json").symlink_to(outside)
    for ref in (
        "../outside.json",
        "link.json",
        f"file://{folder}/../outside.json",
        f"file://{folder}/link.json",
    ):
        error = _error(write_spec(folder, _spec({"type": "string", "contentSchema": {"$ref": ref}})))
        assert ref in error.reason
        assert "not allowed" in error.reason


def test_allowed_url_and_paths_are_loaded(tmp_path: Path, server: _Counting) -> None:
    folder = tmp_path / "api"
    folder.mkdir()
    (folder / "inside.json").write_text('{"type": "object"}')
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "common.json").write_text('{"type": "object"}')
    prefix = _url(server, "/schemas/")
    for ref, allow in (
        (prefix + "thing.json", [prefix]),
        (f"file://{folder}/inside.json", []),
        (f"file://{shared}/common.json", ["../shared"]),
    ):
        path = write_spec(folder, _spec({"type": "string", "contentSchema": {"$ref": ref}}))
        assert _compile(path, allow).operations
    assert server.hits == ["/schemas/thing.json"]


def test_a_url_prefix_ends_at_a_slash(tmp_path: Path, server: _Counting) -> None:
    from bastion.validation.openapi import References

    port = server.server_address[1]
    references = References(tmp_path, (f"http://127.0.0.1:{port}",))
    assert references.permits(f"http://127.0.0.1:{port}/x")
    assert not references.permits(f"http://127.0.0.1:{port}0/x")
    assert not references.permits(f"http://127.0.0.1:{port}@evil.example/x")


def test_a_redirect_out_of_the_allowed_prefix_is_refused(
    tmp_path: Path, server: _Counting, other_server: _Counting
) -> None:
    server.redirect_to = _url(other_server, "/elsewhere")
    allowed = _url(server, "/")
    path = write_spec(tmp_path, _spec({"type": "string", "contentSchema": {"$ref": allowed + "thing.json"}}))
    with pytest.raises(OpenAPIError) as info:
        _compile(path, [allowed])
    assert set(server.hits) == {"/thing.json"}  # fetched, then the redirect refused
    assert other_server.hits == []
    assert "not allowed" in info.value.reason


def test_a_base_uri_cannot_turn_an_allowed_path_into_a_fetch(tmp_path: Path, server: _Counting) -> None:
    # "inside.json" is a file of the folder, but under this $id it means a URL.
    (tmp_path / "inside.json").write_text('{"type": "object"}')
    schema = {"type": "string", "contentSchema": {"$id": _url(server, "/base/"), "$ref": "inside.json"}}
    error = _error(write_spec(tmp_path, _spec(schema)))
    assert server.hits == []
    assert _url(server, "/base/inside.json") in error.reason


def test_validation_allow_external_refs_reaches_the_loader(tmp_path: Path, server: _Counting) -> None:
    """The configuration key is what the guard's loader allows, and nothing more."""
    from bastion import Bastion

    prefix = _url(server, "/schemas/")
    path = write_spec(tmp_path, _spec({"type": "string", "contentSchema": {"$ref": prefix + "thing.json"}}))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        """Never called."""

    with pytest.raises(OpenAPIError):
        Bastion(app, {"store": "memory://", "openapi": str(path)}, env={})
    assert server.hits == []
    config = {"store": "memory://", "openapi": str(path), "validation": {"allow_external_refs": [prefix]}}
    Bastion(app, config, env={})
    assert server.hits == ["/schemas/thing.json"]
