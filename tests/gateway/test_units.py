"""The gateway's sans-I/O parts: configuration, header rules, problem detection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from typer.testing import CliRunner

from bastion.cli import app as cli
from bastion.config import ConfigError, load_config
from bastion.gateway.headers import HOP_BY_HOP, Forwarding, response_headers
from bastion.normalize import is_problem, needs_normalizing
from tests.gateway.conftest import clean_env

NAMES = st.sampled_from(
    [
        b"connection",
        b"keep-alive",
        b"te",
        b"upgrade",
        b"x-a",
        b"x-b",
        b"accept",
        b"cookie",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"proxy-authorization",
        b"host",
        b"transfer-encoding",
        b"traceparent",
        b"x-request-id",
        b"content-length",
    ]
)
VALUES = st.sampled_from([b"1.2.3.4", b"x-a", b"close", b"x-b, keep-alive", b"for=6.6.6.6", b"v"])
HEADERS = st.lists(st.tuples(NAMES, VALUES), max_size=12)


def test_gateway_section_defaults_and_durations() -> None:
    config = load_config({"gateway": {"read_timeout": "250ms", "workers": 4}}, env={})
    assert config.gateway.read_timeout.ms == 250
    assert config.gateway.workers == 4
    assert config.gateway.connect_timeout.ms == 5000
    assert config.gateway.admin_port is None


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ({"workers": 0}, "gateway.workers"),
        ({"read_timout": "1s"}, "gateway.read_timout"),
        ({"connect_timeout": "0s"}, "gateway.connect_timeout"),
        ({"port": 70000}, "gateway.port"),
        ({"gc_threshold": 100}, "gateway.gc_threshold"),
        ({"gc_freeze": "sometimes"}, "gateway.gc_freeze"),
    ],
)
def test_bad_gateway_keys_are_reported_with_their_path(section: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"gateway": section}, env={})
    assert [p for p, _ in caught.value.problems] == [path]


def test_environment_overrides_gateway_keys() -> None:
    config = load_config({}, env={"BASTION_GATEWAY__READ_TIMEOUT": "2s", "BASTION_UPSTREAM": "http://x:1/"})
    assert config.gateway.read_timeout.ms == 2000
    assert config.upstream == "http://x:1"


def test_config_check_covers_the_gateway_section(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text("upstream: http://127.0.0.1:3000\ngateway:\n  read_timout: 5s\n")
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert result.exit_code == 1
    assert "gateway.read_timout" in result.output
    assert "did you mean 'read_timeout'" in result.output


def test_gateway_without_an_upstream_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text("store: memory://\n")
    result = subprocess.run(
        [sys.executable, "-m", "bastion", "gateway", "--config", str(path), "--port", "1"],
        capture_output=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )
    assert result.returncode == 2
    assert b"upstream" in result.stderr


@given(HEADERS, st.booleans())
def test_no_hop_by_hop_or_forged_forwarding_header_reaches_the_upstream(
    headers: list[tuple[bytes, bytes]], trusted: bool
) -> None:
    forwarding = Forwarding(["10.0.0.0/8"])
    out = forwarding.upstream_headers(
        headers,
        peer="10.0.0.1" if trusted else "203.0.113.5",
        scheme="http",
        traceparent=None,
        request_id=None,
    )
    names = [k.lower().encode() for k, _ in out]
    assert not set(names) & HOP_BY_HOP
    listed = {t.strip() for k, v in headers if k == b"connection" for t in v.split(b",")} - {
        b"close",
        b"keep-alive",
    }
    assert not set(names) & listed
    for name in (b"x-forwarded-for", b"forwarded", b"x-forwarded-proto"):
        assert names.count(name) == 1
    xff = dict((k.lower(), v) for k, v in out)["x-forwarded-for"]
    if trusted:
        assert xff.endswith("10.0.0.1")
    else:
        assert xff == "203.0.113.5"


@pytest.mark.parametrize("websocket", [False, True])
def test_the_upstream_urls_credentials_replace_the_clients_authorization(websocket: bool) -> None:
    incoming = [(b"authorization", b"Bearer client"), (b"accept", b"*/*"), (b"authorization", b"Basic eA==")]
    sent = Forwarding(authorization="Basic Z3c6cw==").upstream_headers(
        incoming, peer="203.0.113.5", scheme="http", traceparent=None, request_id=None, websocket=websocket
    )
    assert [v for k, v in sent if k.lower() == "authorization"] == ["Basic Z3c6cw=="]
    assert ("accept", "*/*") in sent
    plain = Forwarding().upstream_headers(
        incoming, peer="203.0.113.5", scheme="http", traceparent=None, request_id=None, websocket=websocket
    )
    assert [v for k, v in plain if k == "authorization"] == ["Bearer client", "Basic eA=="]


@given(HEADERS)
def test_response_headers_lose_every_hop_by_hop_header(headers: list[tuple[bytes, bytes]]) -> None:
    kept = response_headers(headers)
    assert not {k for k, _ in kept} & HOP_BY_HOP
    assert all(k == k.lower() for k, _ in kept)


def test_forwarding_headers_follow_each_peer_and_host() -> None:
    forwarding = Forwarding()

    def forwarded(peer: str, host: bytes) -> str:
        out = forwarding.upstream_headers(
            [(b"host", host)], peer=peer, scheme="http", traceparent=None, request_id=None
        )
        return dict(out)["Forwarded"]

    for _ in range(2):  # the second time from what was worked out the first
        assert forwarded("203.0.113.5", b"a.example") == "for=203.0.113.5;proto=http;host=a.example"
        assert forwarded("203.0.113.6", b"a.example") == "for=203.0.113.6;proto=http;host=a.example"
        assert forwarded("203.0.113.5", b"b.example") == "for=203.0.113.5;proto=http;host=b.example"


@given(st.lists(st.tuples(st.one_of(NAMES, st.binary(max_size=6)), VALUES), max_size=12))
@example([(b"x-a\nx-b", b"v"), (b"X-C", b"w")])
def test_response_headers_are_each_header_lowered_less_the_hop_by_hop_ones(
    headers: list[tuple[bytes, bytes]],
) -> None:
    tokens = [t.strip().lower() for k, v in headers if k.lower() == b"connection" for t in v.split(b",")]
    listed = {t for t in tokens if t} - {b"close", b"keep-alive"}
    expected = [(k.lower(), v) for k, v in headers if k.lower() not in HOP_BY_HOP | listed]
    assert response_headers(headers) == expected


def test_ipv6_peers_are_quoted_in_forwarded() -> None:
    out = dict(
        Forwarding().upstream_headers(
            [(b"host", b"api.example")], peer="2001:db8::1", scheme="https", traceparent=None, request_id=None
        )
    )
    assert out["Forwarded"] == 'for="[2001:db8::1]";proto=https;host=api.example'
    assert out["X-Forwarded-Proto"] == "https"


@pytest.mark.parametrize(
    ("media_type", "body", "status", "expected"),
    [
        (b"application/problem+json", b"", 500, True),
        (b"application/json", b'{"status": 404, "title": "Not found"}', 404, True),
        (b"application/json", b'{"status": 500, "title": "x"}', 404, False),
        (b"application/json", b'{"error": "nope"}', 400, False),
        (b"application/json", b"[1, 2]", 400, False),
        (b"application/json", b"not json", 400, False),
        (b"text/html", b"<html>", 500, False),
    ],
)
def test_what_counts_as_a_problem(media_type: bytes, body: bytes, status: int, expected: bool) -> None:
    assert is_problem(media_type, body, status) is expected


def test_only_errors_are_read_for_normalization() -> None:
    for policy in (True, "all"):
        assert needs_normalizing(policy, 500, b"text/html")
        assert not needs_normalizing(policy, 500, b"application/problem+json")
        assert not needs_normalizing(policy, 200, b"text/html")
        assert not needs_normalizing(policy, 302, b"text/html")
        assert not needs_normalizing(policy, 600, b"text/html")
    assert not needs_normalizing(True, 404, b"text/html")
    assert needs_normalizing("all", 404, b"text/html")
    assert not needs_normalizing(False, 500, b"text/html")


_GC_PROBE = """
import asyncio, gc, json, sys
from bastion.gateway.server import app_from_environment, build_gateway

embedded = sys.argv[1] == "embedded"
app = build_gateway(sys.argv[2]) if embedded else app_from_environment()
before = gc.get_threshold()

async def lifespan():
    incoming = [{"type": "lifespan.startup"}]
    sent = []
    async def receive():
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)
    async def send(message):
        sent.append(message["type"])
    task = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    while not sent:
        await asyncio.sleep(0.01)
    task.cancel()
    return sent

sent = asyncio.run(lifespan())
after, frozen = gc.get_threshold(), gc.get_freeze_count()
print(json.dumps({"sent": sent, "before": before, "after": after, "frozen": frozen}))
"""


def _probe_gc(tmp_path: Path, gateway_section: str, *, embedded: bool = False) -> dict[str, object]:
    import json

    path = tmp_path / "bastion.yaml"
    path.write_text(f"upstream: http://127.0.0.1:9\nstore: memory://\ngateway: {gateway_section}\n")
    result = subprocess.run(
        [sys.executable, "-c", _GC_PROBE, "embedded" if embedded else "worker", str(path)],
        capture_output=True,
        timeout=60,
        env=clean_env(BASTION_CONFIG=str(path)),
        check=True,
    )
    probed: dict[str, object] = json.loads(result.stdout)
    return probed


def test_a_gateway_worker_freezes_its_start_up_objects_and_collects_less_often(tmp_path: Path) -> None:
    probed = _probe_gc(tmp_path, "{}")
    assert probed["sent"] == ["lifespan.startup.complete"]
    assert probed["after"] == [50_000, *probed["before"][1:]]  # type: ignore[index]
    assert probed["frozen"] > 10_000  # type: ignore[operator]


def test_gateway_gc_settings_are_followed(tmp_path: Path) -> None:
    probed = _probe_gc(tmp_path, "{gc_freeze: false, gc_threshold: 700}")
    assert probed["after"] == probed["before"] == [700, 10, 10]
    assert probed["frozen"] == 0


def test_a_gateway_app_embedded_in_another_process_leaves_its_collector_alone(tmp_path: Path) -> None:
    probed = _probe_gc(tmp_path, "{}", embedded=True)
    assert probed["sent"] == ["lifespan.startup.complete"]
    assert probed["after"] == probed["before"]
    assert probed["frozen"] == 0


def test_the_installed_aiohttp_offers_the_direct_upstream_path() -> None:
    # Without it the gateway still works, through ClientSession.request, but some 40,000
    # instructions slower per request: an aiohttp upgrade that loses it must be noticed.
    from bastion.config.gateway import GatewayConfig
    from bastion.gateway.upstream import UpstreamClient

    assert UpstreamClient(GatewayConfig()).direct
    assert not UpstreamClient(GatewayConfig(), direct=False).direct


def test_any_asgi_server_takes_the_gateway_app_for_asgi_3() -> None:
    import io

    import uvicorn

    from bastion.gateway.server import build_gateway

    app = build_gateway(
        {"upstream": "http://127.0.0.1:9", "store": "memory://"}, env={}, log_stream=io.BytesIO()
    )
    config = uvicorn.Config(app)
    config.load()
    assert config.interface == "asgi3"
