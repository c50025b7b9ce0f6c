"""bench/soak.py, run briefly: it starts its peers, drives every client, judges and says so.

The soak itself runs for minutes by hand; this keeps the script from rotting
between those runs (a parse of wrk's output that no longer matches, a hostile case
whose answer changed) at the cost of a short run in the normal suite.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("wrk") is None, reason="wrk is not installed (make bench-tools installs it)"
    ),
]


def test_a_short_soak_passes_and_prints_every_line_of_its_summary() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--duration", "8"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        env=env,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    assert out.startswith("soak: server bastion, 1 worker(s), store memory, 8 s;")
    wrk = re.search(
        r"^wrk: (\d+) requests, \d+ req/s, non-2xx (\d+), socket errors connect 0, "
        r"read 0, write 0, timeout 0$",
        out,
        re.MULTILINE,
    )
    assert wrk is not None and int(wrk.group(1)) > 0, out
    bursts = re.search(r"^pipelined bursts of 50: (\d+) ok, 0 failed$", out, re.MULTILINE)
    assert bursts is not None and int(bursts.group(1)) > 0, out
    assert re.search(r"^hostile cases: \d+ ok, 0 failed$", out, re.MULTILINE), out
    for case in (
        "trickled head -> 408",
        "body stopped halfway -> 408",
        "silent connections -> closed",
        "Content-Length with Transfer-Encoding -> 400",
        "oversized head -> 431",
    ):
        assert re.search(rf"^  {re.escape(case)}: [1-9]\d* ok, 0 failed$", out, re.MULTILINE), (case, out)
    assert re.search(r"^slow reader", out, re.MULTILINE), out
    assert re.search(
        r"^rss \(1 process\(es\)\): at 10% [\d.]+ MiB, end [\d.]+ MiB, max [\d.]+ MiB; "
        r"growth [-+][\d.]+ MiB \([-+][\d.]+%\)$",
        out,
        re.MULTILINE,
    ), out
    assert re.search(r"^fds: at 10% \d+, end \d+ \([-+]\d+\);", out, re.MULTILINE), out
    assert re.search(r"^threads: at 10% \d+, end \d+, max \d+$", out, re.MULTILINE), out
    assert re.search(r"^gateway log", out, re.MULTILINE), out
    assert out.rstrip().endswith("verdict: ok"), out
