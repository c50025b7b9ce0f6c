"""What bastion's servers hand uvicorn: the guarded protocol or the public fallback, limits, log lines."""

from __future__ import annotations

import functools
import io
import logging
import pickle
import sys

import orjson
import pytest

from bastion.config.gateway import GatewayConfig
from bastion.gateway.serving import (
    MIN_CONNECTIONS,
    RefusalLog,
    ServerLimits,
    problem_response,
    uvicorn_options,
)
from bastion.observability.logging import JsonLineHandler, server_log_config
from bastion.problems import BadRequest

LIMITS = ServerLimits.from_config(GatewayConfig(), "https://errors.example/")


def test_the_defaults_are_the_documented_ones() -> None:
    assert (LIMITS.header_timeout, LIMITS.body_timeout, LIMITS.keepalive_timeout) == (10.0, 30.0, 5.0)
    assert (LIMITS.max_header_bytes, LIMITS.max_headers, LIMITS.max_connections) == (32_768, 100, 10_000)


def test_the_guarded_protocol_is_used_and_survives_the_trip_to_a_worker_process() -> None:
    from bastion.gateway.transport import GatewayHttpProtocol, GuardedHttpProtocol

    options = uvicorn_options(LIMITS, coalesce=True)
    assert options["proxy_headers"] is False
    assert options["timeout_keep_alive"] == 5.0
    protocol = pickle.loads(pickle.dumps(options["http"]))  # --workers sends it to spawned processes
    assert isinstance(protocol, functools.partial)
    assert protocol.func is GatewayHttpProtocol
    assert protocol.keywords["limits"] == LIMITS
    assert uvicorn_options(LIMITS)["http"].func is GuardedHttpProtocol


def test_a_uvicorn_of_another_shape_gets_the_public_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the transport module does when its import-time check fails: raise ImportError.
    monkeypatch.setitem(sys.modules, "bastion.gateway.transport", None)
    options = uvicorn_options(LIMITS, coalesce=True)
    assert options["http"] == "auto"
    assert options["limit_concurrency"] == 10_000
    assert options["h11_max_incomplete_event_size"] == 32_768
    assert options["proxy_headers"] is False


def test_the_connection_ceiling_leaves_room_under_the_open_file_limit() -> None:
    assert LIMITS.within_open_files(1_048_576, reserved=256) is LIMITS
    lowered = LIMITS.within_open_files(1024, reserved=256)
    assert lowered.max_connections == 1024 - 256 - 128
    assert LIMITS.within_open_files(100, reserved=256).max_connections == MIN_CONNECTIONS


def test_a_problem_the_server_answers_itself_is_a_whole_closing_response() -> None:
    raw = problem_response(BadRequest("not HTTP"), "https://errors.example/", [(b"server", b"x")])
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 400 Bad Request"
    assert b"server: x" in lines and b"connection: close" in lines
    assert b"content-type: application/problem+json" in lines
    assert f"content-length: {len(body)}".encode() in lines
    problem = orjson.loads(body)
    assert problem["type"] == "https://errors.example/bad-request"
    assert any(line.startswith(f"traceparent: 00-{problem['trace_id']}-".encode()) for line in lines)


def test_uvicorn_log_records_become_json_lines() -> None:
    stream = io.BytesIO()
    handler = JsonLineHandler(stream)
    logger = logging.getLogger("uvicorn.error.test-json-lines")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("Invalid HTTP request received.")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("Exception in ASGI application")
    finally:
        logger.removeHandler(handler)
    first, second = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "Invalid HTTP request received."
    assert first["level"] == "warning"
    assert first["logger"] == "uvicorn.error.test-json-lines"
    assert second["level"] == "error"
    assert "RuntimeError: boom" in second["exception"]


def test_the_log_configuration_routes_every_uvicorn_logger_to_the_json_handler() -> None:
    config = server_log_config("warning")
    assert config["handlers"]["json"]["class"] == "bastion.observability.logging.JsonLineHandler"
    assert config["loggers"]["uvicorn"]["handlers"] == ["json"]
    assert config["loggers"]["uvicorn.access"]["handlers"] == ["json"]
    assert "handlers" not in config["loggers"]["uvicorn.error"]  # it propagates to "uvicorn"
    assert config["root"]["handlers"] == ["json"]


def test_refused_connections_are_logged_once_a_second_with_their_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = RefusalLog()
    with caplog.at_level(logging.WARNING, logger="uvicorn.error"):
        for i in range(1000):
            log.refused_one(100.0 + i / 1000, 640)  # 1,000 refusals within one second
        log.refused_one(101.5, 640)
    assert [r.getMessage() for r in caplog.records] == [
        "1 connection(s) refused: 640 are open (gateway.max_connections)",
        "1000 connection(s) refused: 640 are open (gateway.max_connections)",
    ]


def test_refused_requests_are_logged_once_a_second_with_their_counts_by_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = RefusalLog()
    with caplog.at_level(logging.WARNING, logger="uvicorn.error"):
        for i in range(1000):  # 1,000 malformed requests within one second, of 100 kinds
            log.refused_request(100.0 + i / 1000, f"reason {i % 100} (400)")
        log.refused_request(101.5, "request head over the limits (431)")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0] == "Invalid HTTP request received: reason 0 (400) (1)"
    # The second counts what came since: 16 reasons by name, the rest (the 431 too) as other.
    assert messages[1].startswith("Invalid HTTP request received: reason 1 (400) (10), reason 2 (400) (10)")
    assert messages[1].count("(400) (") == 16
    assert messages[1].endswith(", other (840)")
