"""Fault injection (the ``faults`` section): each kind of fault, on each side, against real processes.

The gateway runs in front of the Starlette test upstream (tests/gateway/upstream_app.py),
which counts the calls that reach it. Rules are told apart by a request header of the
test's own (``X-Test-Fault``), so one gateway serves most tests. Draws are seeded
(``faults.seed``), and the share of faulted requests is checked against bounds from
the binomial distribution: the tests repeat exactly.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bastion import Bastion
from bastion.config.faults import DelayDistribution, FaultsConfig
from bastion.faults import delay_sampler, header_faults
from bastion.units import Duration
from tests.gateway.conftest import Server, start_gateway

ACME_KEY = "k-acme"
ACME_SHA256 = "0b131655124822cb1cf254042086d2bf26a4f1c6cd82727aab583e915346aca3"
PERCENT = 30
TRIES = 300


def rule(header: str, **fault: Any) -> dict[str, Any]:
    return {"name": header, "header": f"X-Test-Fault: {header}", **fault}


FAULT_RULES = [
    rule("abort", abort={"status": 503}),
    rule("teapot", abort={"status": 418}),
    rule("drop", abort={"drop": True}),
    rule("reset", abort={"reset_mid_body": True}),
    rule("delay", delay="150ms"),
    rule("upstream-503", side="upstream", abort={"status": 503}),
    rule("upstream-drop", side="upstream", abort={"drop": True}),
    rule("upstream-504", side="upstream", abort={"status": 504}),
    rule("upstream-reset", side="upstream", abort={"reset_mid_body": True}),
    rule("upstream-slow", side="upstream", delay="5s"),
    rule("share", percent=PERCENT, abort={"status": 500}),
    {"name": "acme-only", "match": "GET /echo/acme", "client": "acme", "abort": {"status": 409}},
]


@pytest.fixture(scope="module")
def gateway(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = {
        "upstream": upstream.base,
        "store": "memory://",
        "clients": {
            "identify": ["header:X-API-Key", "ip"],
            "keys": [{"sha256": ACME_SHA256, "name": "acme"}],
        },
        "gateway": {"read_timeout": "1s"},
        "faults": {"rules": FAULT_RULES, "allow_header_control": True, "seed": 7},
    }
    server = start_gateway(tmp_path_factory.mktemp("faults"), config)
    yield server
    server.stop()


def calls(upstream: Server, name: str) -> int:
    return int(httpx.get(f"{upstream.base}/count", params={"name": name}, timeout=5).json()["count"])


def get(gateway: Server, fault: str | None = None, path: str = "/echo/x", **headers: str) -> httpx.Response:
    sent = {"X-Test-Fault": fault} if fault else {}
    sent.update(headers)
    return httpx.get(gateway.base + path, headers=sent, timeout=10)


def assert_injected(response: httpx.Response, status: int) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "INJECTED_FAULT"
    assert body["status"] == status
    assert body["trace_id"] in response.headers["traceparent"]


def fault_lines(server: Server, trace_id: str | None = None) -> list[dict[str, Any]]:
    """The "fault injected" lines (of one trace); for a trace, waits (bounded) until one is written.

    Log lines are written off the request path, a few milliseconds after the response.
    """

    def lines() -> list[dict[str, Any]]:
        return [
            line
            for line in server.log_lines()
            if line.get("event") == "fault injected"
            and (trace_id is None or line.get("trace_id") == trace_id)
        ]

    if trace_id is not None:
        wait_for(lines, f"a fault line for trace {trace_id}", timeout=5)
    return lines()


def wait_for(predicate: Any, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"not within {timeout} s: {what}")


# -- the acceptance test ----------------------------------------------------------------


def test_a_client_that_retries_after_a_timeout_creates_one_order(upstream: Server, tmp_path: Path) -> None:
    config = {
        "upstream": upstream.base,
        "store": "memory://",
        "idempotency": {"require": ["POST /orders"]},
        # Seed 1 delays the first draw (13.4 < 50) and spares the second (84.7).
        "faults": {"rules": [{"match": "POST /orders", "delay": "2s", "percent": 50}], "seed": 1},
    }
    gateway = start_gateway(tmp_path, config)
    try:
        key = f"order-{uuid.uuid4()}"
        outcomes: list[str] = []
        created: httpx.Response | None = None
        for _ in range(10):
            try:
                response = httpx.post(
                    gateway.base + "/orders",
                    json={"item": "book"},
                    headers={"Idempotency-Key": key},
                    timeout=1,
                )
            except httpx.TimeoutException:
                outcomes.append("timeout")
                continue
            outcomes.append(str(response.status_code))
            if response.status_code == 409:
                # In progress: the client waits as it is told, then retries.
                time.sleep(min(float(response.headers["retry-after"]), 2))
                continue
            created = response
            break
        assert created is not None and created.status_code == 201, outcomes
        assert outcomes[0] == "timeout", outcomes
        # Every request the gateway took has finished (the timed-out one included) ...
        wait_for(
            lambda: (
                sum(1 for line in gateway.log_lines() if line.get("path") == "/orders" and "status" in line)
                == len(outcomes)
            ),
            "an access line for every attempt",
        )
        # ... and the upstream ran the order once.
        assert calls(upstream, "orders:" + key) == 1
        assert created.json()["order"] == 1
        again = httpx.post(gateway.base + "/orders", json={"item": "book"}, headers={"Idempotency-Key": key})
        assert again.headers.get("idempotent-replayed") == "true"
        assert calls(upstream, "orders:" + key) == 1
    finally:
        gateway.stop()


# -- client side ------------------------------------------------------------------------


def test_the_gateway_warns_at_start_that_faults_are_on(gateway: Server) -> None:
    warnings = [line for line in gateway.log_lines() if "fault injection is on" in str(line.get("event"))]
    assert warnings and warnings[0]["level"] == "warning"
    assert warnings[0]["rules"] == len(FAULT_RULES)


def test_a_status_abort_is_an_injected_fault_problem_and_never_reaches_the_upstream(
    gateway: Server, upstream: Server
) -> None:
    before = calls(upstream, "echo")
    response = get(gateway, "abort")
    assert_injected(response, 503)
    assert_injected(get(gateway, "teapot"), 418)
    assert calls(upstream, "echo") == before
    trace_id = response.json()["trace_id"]
    [line] = fault_lines(gateway, trace_id)
    assert line["side"] == "client" and line["kinds"] == ["status"] and line["rules"] == ["abort"]
    # Logged as injected, never as a server problem.
    assert [x for x in gateway.log_lines() if x.get("trace_id") == trace_id and x["level"] == "error"] == []


def test_a_drop_closes_the_connection_without_a_response(gateway: Server, upstream: Server) -> None:
    before = calls(upstream, "echo")
    with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
        get(gateway, "drop")
    assert calls(upstream, "echo") == before
    assert get(gateway).status_code == 200


def test_a_reset_mid_body_starts_the_response_and_breaks_it_off(gateway: Server, upstream: Server) -> None:
    before = calls(upstream, "echo")
    with httpx.stream("GET", gateway.base + "/echo/x", headers={"X-Test-Fault": "reset"}) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()
    # The request ran: only its answer was cut.
    assert calls(upstream, "echo") == before + 1


def test_a_delay_is_injected_and_logged_with_the_trace_id(gateway: Server) -> None:
    response = get(gateway, "delay")
    assert response.status_code == 200
    [line] = fault_lines(gateway, response.headers["x-request-id"])
    assert line["kinds"] == ["delay"] and line["delay_ms"] == 150
    assert line["level"] == "info"


def test_a_client_rule_applies_to_that_client_only(gateway: Server) -> None:
    assert_injected(get(gateway, path="/echo/acme", **{"X-API-Key": ACME_KEY}), 409)
    assert get(gateway, path="/echo/acme").status_code == 200
    assert get(gateway, path="/echo/other", **{"X-API-Key": ACME_KEY}).status_code == 200


def test_percent_injects_into_a_binomial_share_of_requests(gateway: Server) -> None:
    # One kept connection: the draw is per request, not per connection.
    with httpx.Client(base_url=gateway.base, headers={"X-Test-Fault": "share"}, timeout=10) as client:
        hit = sum(client.get("/echo/x").status_code == 500 for _ in range(TRIES))
    # Six standard deviations either side: a correct draw falls outside with p < 2e-9.
    mean = TRIES * PERCENT / 100
    spread = 6 * math.sqrt(TRIES * PERCENT / 100 * (1 - PERCENT / 100))
    assert mean - spread <= hit <= mean + spread
    assert 0 < hit < TRIES


def test_every_fault_is_counted_by_kind_and_side(gateway: Server) -> None:
    get(gateway, "abort")
    get(gateway, "upstream-503")
    text = httpx.get(gateway.base + "/metrics").text
    assert 'bastion_faults_injected_total{kind="status",side="client"}' in text
    assert 'bastion_faults_injected_total{kind="status",side="upstream"}' in text


# -- upstream side ----------------------------------------------------------------------


def test_an_upstream_status_is_the_upstream_failing(gateway: Server, upstream: Server) -> None:
    before = calls(upstream, "echo")
    response = get(gateway, "upstream-503")
    assert response.status_code == 503
    body = response.json()
    # Not INJECTED_FAULT: the client sees what it sees when the upstream answers 503.
    assert body["code"] == "DEPENDENCY_UNAVAILABLE"
    assert body["trace_id"] in response.headers["traceparent"]
    assert calls(upstream, "echo") == before


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("upstream-drop", 502, "UPSTREAM_UNAVAILABLE"),
        ("upstream-504", 504, "UPSTREAM_TIMEOUT"),
        ("upstream-slow", 504, "UPSTREAM_TIMEOUT"),
    ],
)
def test_upstream_failures_are_the_gateways_usual_problems(
    gateway: Server, fault: str, status: int, code: str
) -> None:
    response = get(gateway, fault)
    assert response.status_code == status
    assert response.json()["code"] == code
    [line] = fault_lines(gateway, response.json()["trace_id"])
    assert line["side"] == "upstream"


def test_an_upstream_reset_breaks_the_response_off(gateway: Server) -> None:
    with httpx.stream(
        "GET", gateway.base + "/echo/x", headers={"X-Test-Fault": "upstream-reset"}
    ) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()


# -- header control ---------------------------------------------------------------------


def test_header_control_injects_on_request_and_never_reaches_the_upstream(gateway: Server) -> None:
    assert_injected(get(gateway, **{"Bastion-Fault-Abort": "502"}), 502)
    assert get(gateway, **{"Bastion-Fault-Abort": "upstream 502"}).json()["code"] == "UPSTREAM_UNAVAILABLE"
    response = get(gateway, **{"Bastion-Fault-Delay": "20ms", "Bastion-Fault-Abort": "nonsense"})
    assert response.status_code == 200
    names = {name.lower() for name, _ in response.json()["headers"]}
    assert not names & {"bastion-fault-delay", "bastion-fault-abort"}
    [line] = fault_lines(gateway, response.headers["x-request-id"])
    assert line["rules"] == ["header"] and line["delay_ms"] == 20


def test_without_header_control_the_headers_do_nothing_and_are_stripped(
    upstream: Server, tmp_path: Path
) -> None:
    config = {
        "upstream": upstream.base,
        "store": "memory://",
        "faults": {"rules": [{"match": "GET /never", "abort": {"status": 503}}]},
    }
    gateway = start_gateway(tmp_path, config)
    try:
        response = get(gateway, **{"Bastion-Fault-Abort": "503", "Bastion-Fault-Delay": "1ms"})
        assert response.status_code == 200
        names = {name.lower() for name, _ in response.json()["headers"]}
        assert not names & {"bastion-fault-delay", "bastion-fault-abort"}
        assert fault_lines(gateway) == []
    finally:
        gateway.stop()


# -- middleware mode and the sans-I/O parts -----------------------------------------------


async def test_client_side_faults_work_in_middleware_mode() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guarded = Bastion(
        app, {"store": "memory://", "faults": {"rules": [{"match": "POST /pay", "abort": {"status": 503}}]}}
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(guarded), base_url="http://t") as client:
        assert_injected(await client.post("/pay"), 503)
        assert (await client.get("/pay")).status_code == 200


def test_no_faults_add_no_layer() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never called
        return

    from bastion.faults import FaultGuard

    def layers(bastion: Bastion) -> list[str]:
        found, inner = [], bastion._chain
        while inner is not app:
            found.append(type(inner).__name__)
            inner = inner.app  # type: ignore[attr-defined]
        return found

    assert FaultGuard.__name__ not in layers(Bastion(app, {"store": "memory://"}))
    assert FaultGuard.__name__ in layers(
        Bastion(app, {"store": "memory://", "faults": {"allow_header_control": True}})
    )


@example([(b"bastion-fault-abort", b"\xb9")])  # a superscript digit in latin-1: not a status
@given(st.lists(st.tuples(st.sampled_from([b"bastion-fault-delay", b"bastion-fault-abort"]), st.binary())))
def test_fault_headers_never_raise_and_stay_in_bounds(headers: list[tuple[bytes, bytes]]) -> None:
    for fault in header_faults(headers):
        assert fault.side in ("client", "upstream")
        assert 0 <= fault.delay <= 300
        assert fault.status is None or 400 <= fault.status <= 599


def test_fault_header_values() -> None:
    [delay, abort] = header_faults(
        [(b"bastion-fault-delay", b"500ms"), (b"bastion-fault-abort", b"upstream 503")]
    )
    assert (delay.side, delay.delay, delay.abort) == ("client", 0.5, None)
    assert (abort.side, abort.abort, abort.status) == ("upstream", "status", 503)
    assert header_faults([(b"bastion-fault-abort", b"200"), (b"bastion-fault-delay", b"sideways 1s")]) == []


def test_delays_follow_their_distribution() -> None:
    rng = random.Random(3)
    assert delay_sampler(Duration(250))(rng) == 0.25
    uniform = delay_sampler(DelayDistribution(min=Duration(100), max=Duration(300)))
    drawn = [uniform(rng) for _ in range(2000)]
    assert min(drawn) >= 0.1 and max(drawn) <= 0.3
    tail = delay_sampler(DelayDistribution(p50=Duration(100), p99=Duration(1000)))
    drawn = sorted(tail(rng) for _ in range(20000))
    assert drawn[10000] == pytest.approx(0.1, rel=0.05)
    assert drawn[19800] == pytest.approx(1.0, rel=0.15)


def test_configuration_refuses_what_cannot_be_injected() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        FaultsConfig.model_validate({"rules": [{"abort": {"status": 503, "drop": True}}]})
    with pytest.raises(ValueError, match="a delay, an abort"):
        FaultsConfig.model_validate({"rules": [{"match": "GET /x"}]})
    with pytest.raises(ValueError, match="less than or equal to 100"):
        FaultsConfig.model_validate({"rules": [{"delay": "1s", "percent": 101}]})
    with pytest.raises(ValueError, match="p99 must be at least p50"):
        FaultsConfig.model_validate({"rules": [{"delay": {"p50": "1s", "p99": "10ms"}}]})
    with pytest.raises(ValueError, match="either"):
        FaultsConfig.model_validate({"rules": [{"delay": {"min": "1s", "p99": "10ms"}}]})
    assert not FaultsConfig().enabled
