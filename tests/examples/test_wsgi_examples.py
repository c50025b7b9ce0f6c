"""The Flask and Django examples of docs/wsgi.md, run as the page says.

In-process: each example's app behind ``Bastion`` with the example's own
``bastion.yaml`` (the store swapped for memory). As processes: ``uvicorn asgi:app``
in each example's folder, and ``bastion gateway`` in front of ``flask run``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from bastion import Bastion
from tests.conftest import free_port
from tests.gateway.conftest import clean_env, start_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ORDER = {"item": "book", "quantity": 1}
SECRET = "s3cret"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _flask_app() -> Any:
    from a2wsgi import WSGIMiddleware

    module = _load(EXAMPLES / "flask" / "app.py", "bastion_example_flask_app")
    module.orders.clear()
    module.charges["count"] = 0
    return WSGIMiddleware(module.app)


def _django_app() -> Any:
    module = sys.modules.get("bastion_example_django_orders") or _load(
        EXAMPLES / "django" / "orders.py", "bastion_example_django_orders"
    )
    module.orders.clear()
    module.charges["count"] = 0
    return module.application


@pytest.fixture(params=["flask", "django"])
async def guarded(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """The example app behind bastion, configured by the example's own bastion.yaml."""
    inner = _flask_app() if request.param == "flask" else _django_app()
    app = Bastion(inner, EXAMPLES / request.param / "bastion.yaml", env={"BASTION_STORE": "memory://"})
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http
    finally:
        await app.shutdown()


def _is_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code
    assert problem["trace_id"]
    return problem


async def test_a_retried_order_runs_once(guarded: httpx.AsyncClient) -> None:
    first = await guarded.post("/orders", json=ORDER, headers={"Idempotency-Key": "order-1"})
    again = await guarded.post("/orders", json=ORDER, headers={"Idempotency-Key": "order-1"})
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    listed = (await guarded.get("/orders")).json()
    assert listed["charges"] == 1


async def test_invalid_orders_never_reach_the_app(guarded: httpx.AsyncClient) -> None:
    bad = await guarded.post(
        "/orders", json={"item": "", "quantity": 0, "coupon": "FREE"}, headers={"Idempotency-Key": "order-2"}
    )
    problem = _is_problem(bad, 422, "VALIDATION_FAILED")
    assert {entry["field"] for entry in problem["errors"]} == {"item", "quantity", "coupon"}
    missing = await guarded.post("/orders", json=ORDER)
    _is_problem(missing, 400, "IDEMPOTENCY_KEY_MISSING")
    assert (await guarded.get("/orders")).json()["charges"] == 0


async def test_framework_error_pages_become_problems(guarded: httpx.AsyncClient) -> None:
    crashed = await guarded.get("/reports/daily")
    _is_problem(crashed, 500, "INTERNAL_ERROR")
    assert SECRET not in crashed.text
    missing = await guarded.get("/orders/999")
    _is_problem(missing, 404, "NOT_FOUND")
    assert "<h1>" not in missing.text
    unknown = await guarded.get("/no/such/route")
    _is_problem(unknown, 404, "NOT_FOUND")


@pytest.mark.e2e
@pytest.mark.parametrize("example", ["flask", "django"])
def test_uvicorn_serves_the_example_as_documented(example: str, tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(BASTION_STORE=f"sqlite:///{tmp_path / 'bastion.db'}")
    server = start_server(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "asgi:app",
            "--port",
            str(port),
            "--app-dir",
            str(EXAMPLES / example),
        ],
        port,
        tmp_path,
        ready_path="/health",
        env=env,
        name=example,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        created = httpx.post(f"{base}/orders", json=ORDER, headers={"Idempotency-Key": "k"}, timeout=10)
        replayed = httpx.post(f"{base}/orders", json=ORDER, headers={"Idempotency-Key": "k"}, timeout=10)
        assert created.status_code == 201
        assert replayed.headers["idempotent-replayed"] == "true"
        crashed = httpx.get(f"{base}/reports/daily", timeout=10)
        assert crashed.status_code == 500
        assert crashed.headers["content-type"].startswith("application/problem+json")
        assert SECRET not in crashed.text
        trace_id = crashed.json()["trace_id"]
    finally:
        server.stop()
    # The framework's own error page is in bastion's log under the client's trace id.
    replaced = [
        line for line in server.log_lines() if line.get("trace_id") == trace_id and "upstream_status" in line
    ]
    assert replaced and replaced[0]["upstream_status"] == 500, server.stderr_path.read_text()[-2000:]


@pytest.mark.e2e
def test_the_gateway_in_front_of_flask_run(tmp_path: Path) -> None:
    flask_port, gateway_port = free_port(), free_port()
    flask_bin = str(Path(sys.executable).parent / "flask")
    upstream = start_server(
        [flask_bin, "--app", str(EXAMPLES / "flask" / "app"), "run", "--port", str(flask_port)],
        flask_port,
        tmp_path,
        ready_path="/health",
        env=clean_env(),
        name="flask",
    )
    workdir = EXAMPLES / "flask"
    try:
        gateway = start_server(
            [
                sys.executable,
                "-m",
                "bastion",
                "gateway",
                "--config",
                str(workdir / "bastion-gateway.yaml"),
                "--upstream",
                f"http://127.0.0.1:{flask_port}",
                "--port",
                str(gateway_port),
            ],
            gateway_port,
            tmp_path,
            ready_path="/_bastion/ready",
            env=clean_env(BASTION_STORE=f"sqlite:///{tmp_path / 'gateway.db'}"),
            name="gateway",
        )
        try:
            base = f"http://127.0.0.1:{gateway_port}"
            for _ in range(2):
                created = httpx.post(
                    f"{base}/orders", json=ORDER, headers={"Idempotency-Key": "g"}, timeout=10
                )
                assert created.status_code == 201
            assert httpx.get(f"{base}/orders", timeout=10).json()["charges"] == 1
            missing = httpx.get(f"{base}/orders/999", timeout=10)
            _is_problem(missing, 404, "NOT_FOUND")
            crashed = httpx.get(f"{base}/reports/daily", timeout=10)
            _is_problem(crashed, 500, "INTERNAL_ERROR")
        finally:
            gateway.stop()
    finally:
        upstream.stop()
