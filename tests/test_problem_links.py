"""Every problem links the documentation of its code: ``Link: <URL>; rel="describedby"``.

The URL is ``errors.docs_url`` filled in for the code; by default it is the code's row of
docs/errors.md (``{type_base}#{slug}``), whose anchors are pinned here too.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.asgi import Receive, Scope, Send
from bastion.config import ConfigError, load_config
from bastion.errordocs import bastion_codes
from bastion.problems import (
    DEFAULT_DOCS_URL,
    Conflict,
    NotFound,
    ProblemLinks,
    code_slug,
    error_codes,
    is_problem_code,
    render,
)
from bastion.problems.links import MAX_CACHED_CODES
from tests.conftest import free_port
from tests.gateway.conftest import Server, start_gateway
from tests.support import client, wrap

ERRORS_PAGE = Path(__file__).parent.parent / "docs" / "errors.md"
BASE = "https://bastion.dev/errors/"


def link_of(code: str, base: str = BASE) -> str:
    return f'<{base}#{code_slug(code)}>; rel="describedby"'


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    """Raises a problem, or fails, or answers an HTML 500, by path."""
    path = scope["path"]
    if path == "/paid":
        raise Conflict(code="ORDER_ALREADY_PAID", headers={"Link": '</orders/1>; rel="related"'})
    if path == "/missing":
        raise NotFound()
    if path == "/crash":
        raise RuntimeError("boom")
    status = 500 if path == "/html" else 201
    headers = [(b"content-type", b"text/html")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"<h1>oops</h1>"})


MIDDLEWARE_CONFIG: dict[str, Any] = {
    "idempotency": {"require": ["POST /orders"]},
    "rate_limits": {"rules": [{"name": "tiny", "match": "GET /limited", "limit": "1/minute"}]},
}


async def answers(config: dict[str, Any]) -> dict[str, httpx.Response]:
    """One response for each way a problem is made behind the middleware."""
    bastion, _ = wrap(application, {**MIDDLEWARE_CONFIG, **config})
    async with client(bastion) as http:
        limited = await http.get("/limited")
        assert limited.status_code != 429
        return {
            "ORDER_ALREADY_PAID": await http.get("/paid"),
            "NOT_FOUND": await http.get("/missing"),
            "INTERNAL_ERROR": await http.get("/crash"),
            "REPLACED": await http.get("/html"),  # the application's 500 page, replaced
            "IDEMPOTENCY_KEY_MISSING": await http.post("/orders", content=b"{}"),
            "RATE_LIMITED": await http.get("/limited"),
            "METHOD_NOT_ALLOWED": await http.post("/metrics"),
        }


async def test_every_problem_behind_the_middleware_links_its_code() -> None:
    for code, response in (await answers({})).items():
        body = orjson.loads(response.content)
        if code == "REPLACED":
            assert b"oops" not in response.content
            code = body["code"]
        assert body["code"] == code, (code, response.status_code, body)
        links = response.headers.get_list("link")
        assert link_of(code) in links, (code, links)
        assert "documentation_url" not in body


async def test_the_applications_own_link_is_kept_beside_the_documentation_link() -> None:
    response = (await answers({}))["ORDER_ALREADY_PAID"]
    assert response.headers.get_list("link") == [link_of("ORDER_ALREADY_PAID"), '</orders/1>; rel="related"']


async def test_docs_url_is_a_template_with_code_slug_and_type_base() -> None:
    config = {
        "errors": {
            "type_base": "https://api.example.com/problems/",
            "docs_url": "https://docs.example.com/errors/{code}?from={type_base}#{slug}",
        }
    }
    response = (await answers(config))["NOT_FOUND"]
    assert response.headers["link"] == (
        "<https://docs.example.com/errors/NOT_FOUND?from=https://api.example.com/problems/#not-found>;"
        ' rel="describedby"'
    )
    assert orjson.loads(response.content)["type"] == "https://api.example.com/problems/not-found"


async def test_the_default_follows_type_base() -> None:
    base = "https://docs.example.com/errors/"
    response = (await answers({"errors": {"type_base": base}}))["RATE_LIMITED"]
    assert response.headers["link"] == link_of("RATE_LIMITED", base)


async def test_a_null_docs_url_sends_no_link() -> None:
    for response in (await answers({"errors": {"docs_url": None}})).values():
        assert "link" not in response.headers or "describedby" not in response.headers["link"]


@pytest.mark.parametrize(
    ("template", "type_base", "reason"),
    [
        ("https://x/{nope}", BASE, "unknown placeholder {nope}"),
        ("https://x/{code!r}", BASE, "takes no format or conversion"),
        ("https://x/{slug:>9}", BASE, "takes no format or conversion"),
        ("https://x/{code", BASE, "a brace stands only around a placeholder"),
        ("https://x/}", BASE, "a brace stands only around a placeholder"),
        ("https://x/{code} docs", BASE, "is not a URI reference"),
        ("{type_base}#{slug}", "https://x/<errors>/", "errors.type_base 'https://x/<errors>/' cannot stand"),
        ("", BASE, "is not a URI reference"),
        ('https://x/"{code}"', BASE, "is not a URI reference"),
        ("https://x/ü/{code}", BASE, "is not a URI reference"),
        ("https://x/{{code}}", BASE, "is not a URI reference"),
    ],
)
def test_a_bad_template_is_refused_at_load_naming_the_key(template: str, type_base: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"errors": {"docs_url": template, "type_base": type_base}}, env={})
    ((key, message),) = info.value.problems
    assert key == "errors.docs_url"
    assert reason in message


def test_a_template_without_placeholders_links_every_code_to_one_page() -> None:
    config = load_config({"errors": {"docs_url": "/docs/errors"}}, env={})
    assert config.errors.problem_links().docs_url_of("NOT_FOUND") == "/docs/errors"
    assert load_config({}, env={}).errors.docs_url == DEFAULT_DOCS_URL


def test_each_codes_link_is_rendered_once() -> None:
    links = ProblemLinks(BASE)
    first = links.link_header("NOT_FOUND")
    assert first == (b"link", link_of("NOT_FOUND").encode())
    assert links.link_header("NOT_FOUND") is first
    rendered = render(NotFound(), type_base=links, trace_id="0" * 32, instance="/x")
    assert sum(1 for pair in rendered.headers if pair is first) == 1


def test_the_cache_is_bounded_and_links_stay_right_past_it() -> None:
    links = ProblemLinks(BASE)
    codes = [f"CODE_{i}" for i in range(MAX_CACHED_CODES + 10)]
    for code in codes:
        links.link_header(code)
    assert len(links._links) == MAX_CACHED_CODES
    assert links.link_header(codes[-1]) == (b"link", link_of(codes[-1]).encode())


def test_a_plain_type_base_gets_the_default_link_and_a_bad_one_none() -> None:
    rendered = render(NotFound(), type_base=BASE, trace_id="0" * 32, instance=None)
    assert (b"link", link_of("NOT_FOUND").encode()) in rendered.headers
    rendered = render(NotFound(), type_base="not a base", trace_id="0" * 32, instance=None)
    assert not any(name == b"link" for name, _ in rendered.headers)


@given(st.from_regex(r"[A-Z][A-Z0-9_]{0,63}", fullmatch=True))
def test_slugs_name_codes_one_to_one(code: str) -> None:
    assert is_problem_code(code)
    assert code_slug(code).upper().replace("-", "_") == code
    assert re.fullmatch(r"[a-z0-9-]+", code_slug(code))


def test_every_catalogued_code_has_its_anchor_on_the_errors_page() -> None:
    anchors = re.findall(r'<a id="([a-z0-9-]+)"></a>`([A-Z0-9_]+)`', ERRORS_PAGE.read_text(encoding="utf-8"))
    by_anchor = dict(anchors)
    assert len(by_anchor) == len(anchors), "an anchor is used twice"
    codes = bastion_codes()
    assert {entry.code for entry in codes} <= {entry.code for entry in error_codes()}
    assert len(codes) >= 25
    for entry in codes:
        assert by_anchor.get(code_slug(entry.code)) == entry.code
    # The default link of every code lands on its anchor.
    links = ProblemLinks(BASE)
    for entry in codes:
        url = links.docs_url_of(entry.code)
        assert url is not None and url.partition("#")[2] in by_anchor


# Gateway mode: a problem the gateway makes itself (a request that is not HTTP, an
# upstream that does not answer) carries the link too.


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = {
        "upstream": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "store": "memory://",
        "errors": {"docs_url": "https://docs.example.com/{slug}.html"},
    }
    server = start_gateway(tmp_path_factory.mktemp("links"), config)
    yield server
    server.stop()


def raw_exchange(server: Server, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.settimeout(10)
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


@pytest.mark.e2e
def test_a_problem_the_gateway_makes_itself_links_its_code(gateway: Server) -> None:
    received = raw_exchange(gateway, b"NOT AN HTTP REQUEST\r\n\r\n")
    head, _, body = received.partition(b"\r\n\r\n")
    assert orjson.loads(body)["code"] == "BAD_REQUEST"
    assert b'\r\nlink: <https://docs.example.com/bad-request.html>; rel="describedby"' in head.lower()


@pytest.mark.e2e
def test_a_gateway_problem_about_the_upstream_links_its_code(gateway: Server) -> None:
    response = httpx.get(f"{gateway.base}/orders", timeout=10)
    code = response.json()["code"]
    assert response.status_code >= 500 and code.startswith("UPSTREAM_")
    assert response.headers["link"] == f'<https://docs.example.com/{code_slug(code)}.html>; rel="describedby"'
