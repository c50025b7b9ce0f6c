"""``bastion limits suggest``: suggestions from recorded observations, a live gateway, the bench."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from bastion import Bastion
from bastion.cli import app
from bastion.config import load_config
from bastion.control.suggest import readable
from bastion.ratelimit.observed import FORMAT, RateSketch
from tests.conftest import free_port
from tests.control.conftest import serving
from tests.gateway.conftest import ROOT, clean_env, start_gateway, start_upstream
from tests.support import LogCapture

MINUTE_US = 60_000_000
CONFIG = {
    "upstream": "http://127.0.0.1:9",
    "store": "memory://",
    "rate_limits": {
        "rules": [
            {"name": "per-client", "key": "client", "limit": "60/minute", "tiers": {"paid": "600/minute"}},
            {"name": "login", "match": "POST /login", "key": "ip", "limit": "5/minute"},
        ]
    },
}


def recorded(rule: str, tier: str | None, limit: str, peaks: dict[str, int]) -> dict[str, Any]:
    """One sketch's snapshot in which each client sent its peak in one minute."""
    sketch = RateSketch(rule, tier, ("client",), limit, MINUTE_US, 2048)
    sketch.tick(0)
    for client, peak in peaks.items():
        sketch.add(client, peak)
    return sketch.snapshot(MINUTE_US - 1)


@pytest.fixture
def observed(tmp_path: Path) -> Path:
    """A recorded file: 100 free clients at 1..100 a minute, 10 paid at 100..1000, a login rule."""
    sketches = [
        recorded("per-client", None, "60/minute", {f"c{i}": i for i in range(1, 101)}),
        recorded("per-client", "paid", "600/minute", {f"p{i}": 100 * i for i in range(1, 11)}),
        recorded("login", None, "5/minute", {f"ip{i}": 1 + i % 3 for i in range(30)}),
    ]
    path = tmp_path / "observed.json"
    path.write_text(json.dumps({"format": FORMAT, "process": 1, "sketches": sketches}))
    return path


def suggest(*args: str) -> Any:
    result = CliRunner().invoke(app, ["limits", "suggest", *args])
    return result


def test_the_table_gives_percentiles_a_suggestion_and_its_refusals(observed: Path) -> None:
    result = suggest("--from", str(observed))
    assert result.exit_code == 0, result.output
    lines = {tuple(line.split()[:2]): line.split() for line in result.output.splitlines() if line}
    # 100 clients at 1..100: p99 is 99, x 1.5 = 148.5, rounded up to 150; nobody passed it.
    assert lines[("per-client", "-")][2:] == ["60/minute", "100", "50", "95", "99", "100", "150/minute", "0"]
    assert lines[("per-client", "paid")][2:] == [
        "600/minute", "10", "500", "1000", "1000", "1000", "1500/minute", "0"
    ]  # fmt: skip
    assert lines[("login", "-")][8:] == ["5/minute", "0"]


def test_a_lower_percentile_and_headroom_refuse_the_clients_above(observed: Path) -> None:
    result = suggest("--from", str(observed), "--percentile", "80", "--headroom", "1", "--format", "json")
    assert result.exit_code == 0, result.output
    found = {(s["rule"], s["tier"]): s for s in json.loads(result.output)}
    free = found[("per-client", None)]
    assert (free["p50"], free["suggested"], free["refused"], free["exact"]) == (50, "80/minute", 20, True)
    assert found[("per-client", "paid")]["refused"] == 2  # 900 and 1000 > 800


def test_the_yaml_snippet_is_the_whole_section_and_loads(observed: Path, tmp_path: Path) -> None:
    config_path = tmp_path / "bastion.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    result = suggest("--from", str(observed), "--format", "yaml", "--config", str(config_path))
    assert result.exit_code == 0, result.output
    snippet = yaml.safe_load(result.output)
    rules = snippet["rate_limits"]["rules"]
    assert rules[0] == {
        "name": "per-client",
        "key": "client",
        "limit": "150/minute",
        "tiers": {"paid": "1500/minute"},
    }
    assert rules[1]["match"] == "POST /login"
    applied = load_config({**CONFIG, **snippet}, env={})
    assert str(applied.rate_limits.rules[0].limit) == "150/minute"


def test_without_a_config_the_snippet_names_each_rule(observed: Path) -> None:
    result = suggest("--from", str(observed), "--format", "yaml")
    assert result.exit_code == 0, result.output
    rules = yaml.safe_load(result.output)["rate_limits"]["rules"]
    assert rules[0] == {"name": "per-client", "limit": "150/minute", "tiers": {"paid": "1500/minute"}}


def test_the_admin_format_names_each_rule_once(observed: Path) -> None:
    result = suggest("--from", str(observed), "--format", "admin", "--percentile", "50")
    assert result.exit_code == 0, result.output
    calls = [line for line in result.output.splitlines() if line.startswith("curl")]
    assert len(calls) == 2
    assert "/_bastion/admin/rate-limits/rules/per-client" in calls[0]
    assert '{"limit": "80/minute", "tiers": {"paid": "800/minute"}}' in calls[0]


def test_files_of_several_processes_merge(observed: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    sketch = recorded("per-client", None, "60/minute", {"c1": 500, "new": 7})
    other.write_text(json.dumps({"format": FORMAT, "process": 2, "sketches": [sketch]}))
    result = suggest("--from", str(observed), "--from", str(other), "--format", "json")
    found = {(s["rule"], s["tier"]): s for s in json.loads(result.output)}
    assert (found[("per-client", None)]["clients"], found[("per-client", None)]["max"]) == (101, 500)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "xml"], "--format must be one of"),
        (["--percentile", "0"], "--percentile"),
        (["--headroom", "0"], "--headroom"),
    ],
)
def test_bad_options_exit_2_with_a_message(observed: Path, args: list[str], message: str) -> None:
    result = suggest("--from", str(observed), *args)
    assert result.exit_code == 2
    assert message in result.output


def test_without_a_source_or_with_a_foreign_file_it_says_so(tmp_path: Path) -> None:
    assert "--from FILE or --url" in suggest().output
    foreign = tmp_path / "x.json"
    foreign.write_text('{"format": "other"}')
    result = suggest("--from", str(foreign))
    assert result.exit_code == 2
    assert "bastion-observed-rates/1" in result.output


def test_readable_numbers() -> None:
    assert [readable(v) for v in (0.2, 3.5, 10, 11, 101, 1234, 99_999)] == [1, 4, 10, 12, 120, 1500, 100_000]


def test_a_gateway_serves_its_observations_to_suggest(tmp_path: Path) -> None:
    upstream = start_upstream(tmp_path)
    admin_port = free_port()
    config = {**CONFIG, "upstream": upstream.base}
    gateway = start_gateway(tmp_path, config, admin_port=admin_port)
    try:
        for _ in range(4):
            httpx.get(gateway.base + "/echo/x", timeout=5)
        admin = f"http://127.0.0.1:{admin_port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(admin + "/_bastion/health", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        result = suggest("--url", admin, "--format", "json")
        assert result.exit_code == 0, result.output
        [found] = json.loads(result.output)
        assert (found["rule"], found["clients"], found["max"]) == ("per-client", 1, 4)
    finally:
        gateway.stop()
        upstream.stop()


def _child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_the_traffic_bench_quick_mode_feeds_suggest(tmp_path: Path) -> None:
    # CPU time of the bench, not the clock: a busy machine stretches the clock, not the work.
    started = _child_cpu_seconds()
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "traffic.py"), "--quick", "--out", "observed.json",
         "--write-config", "bastion.yaml"],
        cwd=tmp_path, env=clean_env(), check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert _child_cpu_seconds() - started < 10
    result = suggest("--from", str(tmp_path / "observed.json"), "--format", "json")
    found = {(s["rule"], s["tier"]): s for s in json.loads(result.output)}
    assert set(found) == {("global", None), ("per-client", None), ("per-client", "paid"), ("login", None)}
    assert found[("per-client", None)]["seconds"] > 6 * 86_400
    config_path = tmp_path / "bastion.yaml"
    snippet = suggest(
        "--from", str(tmp_path / "observed.json"), "--format", "yaml", "--config", str(config_path)
    )
    base = yaml.safe_load(config_path.read_text())
    load_config({**base, **yaml.safe_load(snippet.output)}, env={})


async def test_the_suggested_snippet_goes_into_force_with_a_reload(tmp_path: Path) -> None:
    """The operator's loop: a week of traffic, ``limits suggest``, the snippet in the file, a reload."""
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "traffic.py"), "--quick", "--out", "observed.json",
         "--write-config", "bastion.yaml"],
        cwd=tmp_path, env=clean_env(), check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    config_path = tmp_path / "bastion.yaml"
    observed = str(tmp_path / "observed.json")
    found = {
        (s["rule"], s["tier"]): s for s in json.loads(suggest("--from", observed, "--format", "json").output)
    }
    snippet = suggest("--from", observed, "--format", "yaml", "--config", str(config_path)).output
    base = yaml.safe_load(config_path.read_text())
    base.pop("upstream")  # in front of an app here, not a gateway
    config_path.write_text(yaml.safe_dump(base))

    async def echo(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    bastion = Bastion(echo, config_path, env={}, log_stream=LogCapture())
    async with serving(bastion) as http:
        before = (await http.get("/x")).headers["ratelimit-policy"]
        config_path.write_text(yaml.safe_dump({**base, **yaml.safe_load(snippet)}))
        assert await bastion.reload(config_path)
        after = (await http.get("/x")).headers["ratelimit-policy"]
    assert '"global";q=1000' in before
    assert f'"global";q={found[("global", None)]["suggested_limit"]}' in after
    assert f'"per-client";q={found[("per-client", None)]["suggested_limit"]}' in after
