"""schemathesis against the running ``bastion demo``: no 5xx, invalid data rejected, valid data accepted.

The demo runs every guard, so a generated request may also meet a rate limit
(429) or an idempotency key reused with another body (409); those are the other
guards doing their job and are accepted here. ``GET /reports/daily`` fails on
purpose (it shows what a crash looks like) and is left out. Bounded: a few
examples per operation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bastion.demo
from tests.conftest import free_port
from tests.validation.helpers import refused_for_control_characters

pytestmark = pytest.mark.e2e
DEMO_SPEC = Path(bastion.demo.__file__).parent / "openapi.yaml"
# The paid tier (from the demo's configuration) keeps the per-client limit out of the way.
HEADERS = {"X-API-Key": "key-paid-1"}
OTHER_GUARDS = (409, 429)
VALIDATION_CODES = {"VALIDATION_FAILED", "MALFORMED_BODY", "UNSUPPORTED_MEDIA_TYPE", "PAYLOAD_TOO_LARGE"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("demo-schemathesis")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "bastion", "demo", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail("bastion demo exited at start-up")
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("bastion demo did not start within 30 s")
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def operations() -> list[schemathesis.APIOperation]:
    if not DEMO_SPEC.is_file():
        return []
    schema = schemathesis.openapi.from_path(str(DEMO_SPEC))
    found = [result.ok() for result in schema.get_all_operations()]
    return [op for op in found if op.path != "/reports/daily"]


def refused_by_business_rules(status: int, problem: Any) -> bool:
    """Whether a response is a 422 for ``x-bastion-rules`` only: schema-valid data a rule refuses."""
    errors = problem.get("errors") if status == 422 and isinstance(problem, dict) else None
    return bool(errors) and all("rule" in e for e in errors)


@pytest.mark.skipif(not DEMO_SPEC.is_file(), reason="the demo has no openapi.yaml")
def test_acceptance_on_the_demo(demo: str) -> None:
    response = httpx.post(
        demo + "/users",
        json={"email": "nope", "age": 12, "name": "A", "role": "admin"},
        headers=HEADERS,
        timeout=5,
    )
    assert response.status_code == 422
    problem = response.json()
    assert {e["field"] for e in problem["errors"]} == {"email", "age", "role"}
    assert "nope" not in response.text


@pytest.mark.parametrize("operation", operations(), ids=lambda op: op.label)
def test_generated_requests_against_the_demo(demo: str, operation: schemathesis.APIOperation) -> None:
    positive = operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE)
    negative = operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE)
    strategies = [positive.map(lambda case: (True, case))]
    if operation.body or any(True for _ in operation.iter_parameters()):
        strategies.append(negative.map(lambda case: (False, case)))
    rejected: list[int] = []

    # Derandomized: the same cases every run, so whether an invalid body is generated
    # does not depend on luck or on a local example database.
    @settings(
        max_examples=10,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    @given(st.one_of(strategies))
    def run(pair: tuple[bool, schemathesis.Case]) -> None:
        valid, case = pair
        response = case.call(base_url=demo, headers=HEADERS, timeout=5)
        assert response.status_code < 500, (case.as_curl_command(), response.text)
        if response.status_code in OTHER_GUARDS:
            return
        if valid:
            if refused_for_control_characters(response.status_code, response.json()):
                return
            if refused_by_business_rules(response.status_code, response.json()):
                return  # valid for the schema, but not for an x-bastion-rules rule (POST /bookings)
            # Valid data reaches the application (which may still answer 404 for an unknown order).
            code = response.json().get("code") if response.status_code >= 400 else None
            assert code not in VALIDATION_CODES, (case.as_curl_command(), response.text)
        elif response.status_code >= 400:
            rejected.append(response.status_code)
            assert response.headers["content-type"][0].startswith("application/problem+json")

    run()
    if operation.body:
        assert rejected, "no generated invalid body was rejected"
