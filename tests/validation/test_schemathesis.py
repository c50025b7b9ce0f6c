"""schemathesis against a real server (uvicorn) running an app behind bastion.

Generated valid requests are accepted, generated invalid ones are rejected with
a 4xx problem, and nothing produces a 5xx. Bounded: a few examples per operation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import free_port
from tests.validation.helpers import CHECKOUT, refused_for_control_characters

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.validation.server_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited: {process.stderr.read().decode() if process.stderr else ''}")
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the server did not start within 20 s")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


SCHEMA = schemathesis.openapi.from_path(str(CHECKOUT))
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_generated_requests(server: str, operation: schemathesis.APIOperation) -> None:
    positive = operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE)
    negative = operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE)
    strategies = [positive.map(lambda case: (True, case))]
    if operation.body or any(True for _ in operation.iter_parameters()):
        strategies.append(negative.map(lambda case: (False, case)))

    outcomes: dict[str, list[str]] = {"rejected": [], "accepted": []}

    # Derandomized: the same cases every run, so whether an invalid body is generated
    # does not depend on luck or on a local example database.
    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    @given(st.one_of(strategies))
    def run(pair: tuple[bool, schemathesis.Case]) -> None:
        valid, case = pair
        response = case.call(base_url=server, timeout=5)
        assert response.status_code < 500, (case.as_curl_command(), response.text)
        if valid:
            if refused_for_control_characters(response.status_code, response.json()):
                return
            assert response.status_code == 200, (case.as_curl_command(), response.text)
        else:
            # Not every negative case is invalid once serialised (a "wrong type" can
            # serialise to text that coerces fine), so check that rejections are ours.
            outcomes["rejected" if response.status_code >= 400 else "accepted"].append(case.as_curl_command())
            if response.status_code >= 400:
                assert response.headers["content-type"][0].startswith("application/problem+json")
                assert response.status_code in (400, 404, 405, 413, 415, 422)

    run()
    print(operation.label, {k: len(v) for k, v in outcomes.items()}, outcomes["accepted"][:3])
    if operation.body:
        assert outcomes["rejected"], "no generated invalid body was rejected"
