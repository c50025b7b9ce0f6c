"""Metrics summed across worker processes (``--workers N``), under a real uvicorn."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bastion.observability.multiprocess import ENV_VAR, forget_dead_workers, prepare_multiprocess_dir
from tests.observability.servers import serve

ITEMS = {"http_request_method": "GET", "http_route": "/items/{item_id}", "http_response_status_code": "200"}


def count_of(text: str, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


@pytest.mark.e2e
def test_two_workers_report_one_sum_from_any_scrape(tmp_path: Path) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = {ENV_VAR: str(shared), "BASTION_OBSERVABILITY__DASHBOARD__ENABLED": "true"}
    with serve(env, tmp_path / "server.log", workers=2) as base:
        pids: set[int] = set()
        sent = 0
        # New connections until both workers have answered (bounded), so the sum really spans two.
        for _ in range(300):
            pids.add(httpx.get(base + "/pid", timeout=5).json()["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2, "the kernel sent every connection to one worker"
        for i in range(40):
            assert httpx.get(f"{base}/items/{i}", timeout=5).status_code == 200
            sent += 1
        # The readiness probe of serve() counts too.
        expected = sent + 1
        for _ in range(8):
            text = httpx.get(base + "/metrics", timeout=5).text
            assert count_of(text, "http_server_request_duration_seconds_count", ITEMS) == expected
            assert count_of(text, "http_server_request_body_size_bytes_count", ITEMS) == expected
            data = httpx.get(base + "/_bastion/dashboard/data", timeout=5).json()
            routes = {(r["method"], r["route"]): r["count"] for r in data["routes"]}
            assert routes[("GET", "/items/{item_id}")] == expected
        # Only the scrape itself is in flight, whichever worker answers it.
        text = httpx.get(base + "/metrics", timeout=5).text
        assert count_of(text, "http_server_active_requests", {"http_request_method": "GET"}) == 1
    assert any(shared.glob("histogram_*.db"))


def test_dead_workers_stop_counting_in_live_gauges(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        from prometheus_client import Gauge
        Gauge("in_flight", "x", multiprocess_mode="livesum").inc(5)
        """
    )
    env = {**os.environ, ENV_VAR: str(tmp_path)}
    child = subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=30)
    assert child.returncode == 0
    (gauge_file,) = tmp_path.glob("gauge_livesum_*.db")
    pid = int(gauge_file.stem.rsplit("_", 1)[1])
    assert forget_dead_workers(tmp_path) == [pid]
    assert not gauge_file.exists()
    assert forget_dead_workers(tmp_path) == []


def test_prepare_empties_the_directory_and_exports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # setenv first so that the variable prepare_multiprocess_dir sets is undone afterwards:
    # left behind, it would switch every later Metrics of this test process to shared files.
    monkeypatch.setenv(ENV_VAR, "")
    stale = tmp_path / "counter_123.db"
    stale.write_bytes(b"old")
    keep = tmp_path / "notes.txt"
    keep.write_text("not ours")
    directory = prepare_multiprocess_dir(tmp_path)
    assert directory == tmp_path
    assert os.environ[ENV_VAR] == str(tmp_path)
    assert not stale.exists()
    assert keep.exists()
    fresh = prepare_multiprocess_dir()
    assert fresh.is_dir() and fresh != tmp_path
    assert os.environ[ENV_VAR] == str(fresh)
    fresh.rmdir()
