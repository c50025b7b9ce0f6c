"""Route templates: priority, partly templated segments, base paths, configuration-only routes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.protocols import RouteMatch
from bastion.routing.router import TemplateRouter, configured_routes, parse_route
from tests.support import wrap
from tests.validation.helpers import behind_bastion, client, echo_app, write_spec


def match(router: TemplateRouter, method: str, path: str) -> RouteMatch:
    found = router.resolve(method, path)
    assert isinstance(found, RouteMatch), found
    return found


def test_literal_segments_win_over_templated_ones() -> None:
    router = TemplateRouter(authoritative=True)
    router.add("GET", "/users/{id}", "getUser")
    router.add("GET", "/users/me", "me")
    router.add("GET", "/users/{id}/orders/{order}", "order")
    router.add("GET", "/users/me/orders/latest", "latest")
    assert match(router, "GET", "/users/me").operation_id == "me"
    assert match(router, "GET", "/users/42").operation_id == "getUser"
    assert match(router, "GET", "/users/42").path_params == {"id": "42"}
    found = match(router, "GET", "/users/me/orders/7")
    assert (found.operation_id, found.path_params) == ("order", {"id": "me", "order": "7"})
    assert match(router, "GET", "/users/me/orders/latest").operation_id == "latest"


def test_backtracks_when_the_literal_branch_dead_ends() -> None:
    router = TemplateRouter(authoritative=True)
    router.add("GET", "/a/b/c", "literal")
    router.add("GET", "/a/{x}/d", "templated")
    found = match(router, "GET", "/a/b/d")
    assert (found.operation_id, found.path_params) == ("templated", {"x": "b"})


def test_partly_templated_segments() -> None:
    router = TemplateRouter(authoritative=True)
    router.add("GET", "/Accounts/{AccountSid}/Calls/{Sid}.json", "call")
    router.add("GET", "/Accounts/{AccountSid}/Calls/{Sid}", "bare")
    router.add("GET", "/files/{name}.{ext}", "file")
    found = match(router, "GET", "/Accounts/AC1/Calls/CA2.json")
    assert (found.operation_id, found.path_params) == ("call", {"AccountSid": "AC1", "Sid": "CA2"})
    assert match(router, "GET", "/Accounts/AC1/Calls/CA2").operation_id == "bare"
    assert match(router, "GET", "/files/report.tar.gz").path_params == {"name": "report", "ext": "tar.gz"}


def test_unknown_path_none_and_wrong_method_lists_allowed() -> None:
    router = TemplateRouter(authoritative=True)
    router.add("GET", "/orders/{id}", "get")
    router.add("DELETE", "/orders/{id}", "delete")
    assert router.resolve("GET", "/orders") is None
    assert router.resolve("GET", "/orders/") is None
    assert router.resolve("PUT", "/orders/1") == ["DELETE", "GET"]
    assert match(router, "HEAD", "/orders/1").operation_id == "get"
    preflight = match(router, "OPTIONS", "/orders/1")
    assert preflight.operation is None and preflight.template == "/orders/{id}"


def test_server_base_paths_are_stripped() -> None:
    router = TemplateRouter(authoritative=True, base_paths=["/api/v1"])
    router.add("GET", "/orders", "list")
    assert match(router, "GET", "/api/v1/orders").operation_id == "list"
    assert router.resolve("GET", "/orders") is None
    assert router.resolve("GET", "/api/v1x/orders") is None
    both = TemplateRouter(authoritative=True, base_paths=["/v2", ""])
    both.add("GET", "/orders", "list")
    assert match(both, "GET", "/v2/orders").operation_id == "list"
    assert match(both, "GET", "/orders").operation_id == "list"


async def test_servers_in_the_description(tmp_path: Path) -> None:
    spec = {
        "openapi": "3.0.3",
        "info": {"title": "t", "version": "1"},
        "servers": [
            {"url": "https://api.example.com/{version}", "variables": {"version": {"default": "v1"}}},
            {"url": "http://localhost:8080/v1/"},
        ],
        "paths": {"/ping": {"get": {"operationId": "ping", "responses": {"200": {"description": "ok"}}}}},
    }
    app, _ = behind_bastion(write_spec(tmp_path, spec))
    async with client(app) as http:
        assert (await http.get("/v1/ping")).status_code == 200
        assert (await http.get("/ping")).status_code == 404


def test_parse_route_entries() -> None:
    assert parse_route("POST /orders/{id}/pay") == ("POST", "/orders/{id}/pay")
    assert parse_route("post  /login") == ("POST", "/login")
    assert parse_route("/health") == ("*", "/health")


async def test_config_only_router_labels_routes_and_lets_unknown_paths_pass() -> None:
    config = {
        "idempotency": {"require": ["POST /orders/{id}/pay"]},
        "rate_limits": {
            "rules": [{"name": "login", "match": "POST /login", "key": "ip", "limit": "5/minute"}]
        },
    }
    app, _ = wrap(echo_app, config)
    from bastion.routing.router import build_router

    router = build_router(app.context)
    assert router is not None and router.authoritative is False
    assert configured_routes(app.config) == [("POST", "/orders/{id}/pay"), ("POST", "/login")]
    async with client(app) as http:
        paid = (await http.post("/orders/17/pay", headers={"Idempotency-Key": "k-1"})).json()
        other = await http.get("/anything/else")
        wrong_method = await http.get("/login")
    assert paid["route"] == "/orders/{id}/pay"
    assert paid["path_params"] == {"id": "17"}
    assert other.status_code == 200 and other.json()["route"] is None
    assert wrong_method.status_code == 200


def test_no_routes_and_no_description_means_no_router() -> None:
    app, _ = wrap(echo_app, {})
    from bastion.routing.router import build_router

    assert build_router(app.context) is None


def test_resolve_is_fast() -> None:
    # A guard against an accidental linear scan: 500 templated routes, resolving stays cheap.
    import time

    router = TemplateRouter(authoritative=True)
    for i in range(500):
        router.add("GET", f"/r{i}/{{id}}/items/{{item}}", f"op{i}")
        router.add("GET", f"/r{i}/static", f"static{i}")
    start = time.perf_counter()
    for _ in range(2000):
        router.resolve("GET", "/r499/5/items/6")
        router.resolve("GET", "/r250/static")
    per_call = (time.perf_counter() - start) / 4000
    assert per_call < 50e-6, per_call
    assert asyncio.iscoroutinefunction(echo_app)


def test_templates_sharing_a_position_keep_their_own_parameter_names() -> None:
    router = TemplateRouter(authoritative=True)
    router.add("GET", "/customers/{customer}", "get")
    router.add("GET", "/customers/{id}/sources/{source}.json", "source")
    router.add("GET", "/files/{name}.json", "file")
    router.add("GET", "/files/{other}.json/raw", "raw")
    assert match(router, "GET", "/customers/c1").path_params == {"customer": "c1"}
    assert match(router, "GET", "/customers/c1/sources/s2.json").path_params == {"id": "c1", "source": "s2"}
    assert match(router, "GET", "/files/a.json").path_params == {"name": "a"}
    assert match(router, "GET", "/files/a.json/raw").path_params == {"other": "a"}


_SEGMENTS = ["a", "b", "me", "{id}", "{x}", "{name}.json", "v{n}"]


@settings(max_examples=300, deadline=None)
@given(
    templates=st.lists(
        st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=4).map(lambda s: "/" + "/".join(s)),
        min_size=1,
        max_size=8,
        unique=True,
    ),
    paths=st.lists(
        st.lists(st.sampled_from(["a", "b", "me", "42", "x.json", "v2", ""]), min_size=1, max_size=5).map(
            lambda s: "/" + "/".join(s)
        ),
        min_size=1,
        max_size=10,
    ),
)
def test_the_quick_descent_finds_what_the_full_walk_finds(templates: list[str], paths: list[str]) -> None:
    router = TemplateRouter(authoritative=True)
    for i, template in enumerate(templates):
        router.add("GET", template, f"op{i}")
    for path in paths:
        values: list[str] = []
        walked = router._walk(router._root, path.split("/")[1:], 0, values)
        expected = None
        if path in router._exact:
            expected = (router._exact[path].template, {})
        elif walked is not None:
            expected = (walked.template, dict(zip(walked.names, values, strict=False)))
        found = router._find(path)
        assert (None if found is None else (found[0].template, found[1])) == expected, path
