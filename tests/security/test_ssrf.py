"""The request target must never choose where the gateway connects.

A real gateway runs in front of a recording upstream; a decoy listener on
127.0.0.2 stands for any other host. Targets that used to be joined to the
upstream URL as strings (``*@127.0.0.2:PORT/`` made 127.0.0.2 the host) must be
refused or answered by the gateway, and the decoy must see no connection at all.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import bastion.demo
from bastion.config import load_config
from bastion.gateway.server import build_gateway
from tests.gateway.conftest import Server
from tests.security.recording import RecordingUpstream, raw_request, recorded_gateway
from tests.security.test_paths import call


@pytest.fixture(scope="module")
def decoy() -> Iterator[socket.socket]:
    """A listener on another loopback address; a connection to it would wait in its backlog."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.2", 0))
        except OSError:
            pytest.skip("127.0.0.2 is not a loopback address here")
        sock.listen(16)
        sock.setblocking(False)
        yield sock


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with recorded_gateway(tmp_path_factory.mktemp("ssrf"), {"store": "memory://"}) as server:
        yield server


@pytest.fixture
def recording(gateway: Server) -> RecordingUpstream:
    upstream: RecordingUpstream = gateway.extra["recording"]
    return upstream


@pytest.fixture
def clean(recording: RecordingUpstream, decoy: socket.socket) -> Iterator[None]:
    recording.seen.clear()
    yield
    # Every answer has arrived: a connection the gateway made for it would be waiting now.
    with pytest.raises(BlockingIOError):
        decoy.accept()


def _decoy_port(decoy: socket.socket) -> int:
    return int(decoy.getsockname()[1])


@pytest.mark.parametrize(
    "target",
    [
        "*@127.0.0.2:{port}/",
        "*@127.0.0.2:{port}/x?y=1",
        "*x",
        "*",
        "http://127.0.0.2:{port}/",
        "http://user@127.0.0.1:{gateway}/",
    ],
)
def test_targets_that_are_not_a_path_are_refused(
    gateway: Server, recording: RecordingUpstream, decoy: socket.socket, clean: None, target: str
) -> None:
    target = target.format(port=_decoy_port(decoy), gateway=gateway.port)
    status, answer = raw_request(gateway.port, f"GET {target} HTTP/1.1")
    assert status == 400, answer
    assert b"application/problem+json" in answer
    assert recording.seen == []


@pytest.mark.parametrize("method", ["CONNECT", "GET"])
def test_authority_form_goes_nowhere(
    gateway: Server, recording: RecordingUpstream, decoy: socket.socket, clean: None, method: str
) -> None:
    status, answer = raw_request(gateway.port, f"{method} 127.0.0.2:{_decoy_port(decoy)} HTTP/1.1")
    assert 400 <= status < 500, answer
    assert recording.seen == []


def test_network_path_is_a_path_on_the_configured_upstream(
    gateway: Server, recording: RecordingUpstream, decoy: socket.socket, clean: None
) -> None:
    port = _decoy_port(decoy)
    status, _ = raw_request(gateway.port, f"GET //127.0.0.2:{port}/x HTTP/1.1")
    assert status == 200
    assert recording.seen == [("GET", f"/127.0.0.2:{port}/x")]


def test_options_asterisk_is_answered_by_the_gateway(
    gateway: Server, recording: RecordingUpstream, clean: None
) -> None:
    status, answer = raw_request(gateway.port, "OPTIONS * HTTP/1.1")
    assert status == 204, answer
    assert b"\r\nallow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n" in answer
    assert recording.seen == []


@pytest.mark.parametrize("path", ["/a/../b", "/b"])
def test_absolute_form_naming_the_gateway_is_served(
    gateway: Server, recording: RecordingUpstream, clean: None, path: str
) -> None:
    # "/b" is canonical already: the target must be rewritten to it all the same.
    status, answer = raw_request(gateway.port, f"GET http://127.0.0.1:{gateway.port}{path}?c=d HTTP/1.1")
    assert status == 200, answer
    assert recording.seen == [("GET", "/b?c=d")]


def test_trace_is_refused(gateway: Server, recording: RecordingUpstream, clean: None) -> None:
    status, answer = raw_request(gateway.port, "TRACE /x HTTP/1.1\r\nCookie: session=secret")
    assert status == 405, answer
    assert b"METHOD_NOT_ALLOWED" in answer and b"secret" not in answer
    assert recording.seen == []


async def test_trace_is_forwarded_when_allowed(recording: RecordingUpstream) -> None:
    recording.seen.clear()
    config = {"store": "memory://", "upstream": recording.url, "routing": {"allow_trace": True}}
    app = build_gateway(load_config(config, env={}), env={})
    try:
        status, _ = await call(app, "TRACE", "/x", {})
    finally:
        await app.bastion.shutdown()
    assert status == 200
    assert recording.seen == [("TRACE", "/x")]


async def test_options_asterisk_with_a_description_that_rejects_unknown_paths() -> None:
    spec = Path(bastion.demo.__file__).parent / "openapi.yaml"
    config = {"store": "memory://", "upstream": "http://127.0.0.1:9", "openapi": str(spec)}
    app = build_gateway(load_config(config, env={}), env={})
    try:
        assert (await call(app, "OPTIONS", "*", {}))[0] == 204
        assert (await call(app, "GET", "/nowhere", {}))[0] == 404
    finally:
        await app.bastion.shutdown()
