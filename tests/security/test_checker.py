"""The checker reads untrusted descriptions: no document makes ``bastion lint`` crash or run away.

Each case runs the real command line in a child process under a 1 GiB address-space
limit and a timeout, so a regression shows as a MemoryError, a crash or a hang.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.check.probes.client import ProbeClient
from bastion.check.report import terminal_safe
from tests.check.hostile import CONTROLS, Behaviour, controls, drip, hostile_server, stream_forever

MEMORY_LIMIT = 1 << 30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@dataclass(frozen=True)
class Run:
    """How one ``bastion`` command line ended."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mb: float


def bastion(*args: str, timeout: float = 60.0) -> Run:
    """Run ``bastion ARGS`` in a child process limited to 1 GiB of address space; kill it at ``timeout``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-c", "from bastion.cli import main; main()", *args],
            stdout=out,
            stderr=err,
            preexec_fn=_limit_memory,
        )
        peak_kib = 0
        while True:
            # The child's own high-water mark: wait4's ru_maxrss would also count the
            # test process's pages copied at fork (Linux keeps them across exec).
            peak_kib = max(peak_kib, _high_water_kib(process.pid))
            pid, status, _ = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > timeout:
                process.send_signal(signal.SIGKILL)
                os.wait4(process.pid, 0)
                pytest.fail(f"bastion {' '.join(args)} still ran after {timeout} s")
            time.sleep(0.05)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        return Run(
            os.waitstatus_to_exitcode(status),
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
            seconds,
            peak_kib / 1024,
        )


def _high_water_kib(pid: int) -> int:
    """VmHWM of a running process (its peak resident memory since exec), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def billion_laughs() -> str:
    """Nine levels of nine aliases each: under 1 KB of YAML, about 400 million members spelled out."""
    lines = ["openapi: 3.1.0", "info: {title: lol, version: '1'}", "paths: {}", "x-lol:"]
    lines.append('  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]')
    previous = "a"
    for name in "bcdefghi":
        lines.append(f"  {name}: &{name} [{', '.join(['*' + previous] * 9)}]")
        previous = name
    return "\n".join(lines) + "\n"


SELF_REFERENCE = "openapi: 3.1.0\ninfo: {title: loop, version: '1'}\npaths: {}\nx-loop: &a [*a]\n"


@pytest.mark.parametrize(
    ("text", "reason"),
    [(billion_laughs(), "alias bomb"), (SELF_REFERENCE, "no finite form")],
    ids=["billion-laughs", "self-reference"],
)
@pytest.mark.parametrize("fix", [False, True], ids=["lint", "lint-fix"])
def test_alias_expansion_is_a_finding_and_fix_refuses_it(
    tmp_path: Path, text: str, reason: str, fix: bool
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    assert len(text) < 1024
    out = tmp_path / "fixed.yaml"
    args = ["lint", str(spec), "--format", "json"] + (["--fix", str(out)] if fix else [])
    result = bastion(*args)
    assert "Traceback" not in result.stderr
    assert "spec-aliases" in result.stdout
    assert reason in result.stdout
    if fix:
        assert result.returncode == 2
        error = " ".join(result.stderr.split())  # the terminal may wrap the line
        assert f"cannot fix {spec}: " in error
        assert reason in error
        assert not out.exists()
    else:
        assert result.returncode == 1


def deep_flow(levels: int) -> str:
    """A description with an extension nested ``levels`` lists deep."""
    head = "openapi: 3.1.0\ninfo: {title: deep, version: '1'}\npaths: {}\n"
    return head + "x-deep: " + "[" * levels + "]" * levels + "\n"


def alias_chain(levels: int) -> str:
    """Each anchor wraps the previous one: a short file that nests ``levels`` deep once written out."""
    lines = [
        "openapi: 3.1.0",
        "info: {title: chain, version: '1'}",
        "paths: {}",
        "x-chain:",
        "  l0: &l0 [end]",
    ]
    lines += [f"  l{i}: &l{i} [*l{i - 1}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text", [deep_flow(495), alias_chain(400)], ids=["deep", "alias-chain"])
@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_lint_fix_refuses_what_it_cannot_write_deeply_enough(tmp_path: Path, text: str, suffix: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    out = tmp_path / f"fixed.{suffix}"
    linted = bastion("lint", str(spec), "--format", "json")
    fixed = bastion("lint", str(spec), "--format", "json", "--fix", str(out))
    for run in (linted, fixed):
        assert "Traceback" not in run.stderr
    assert linted.returncode in (0, 1)
    assert fixed.returncode == 2
    assert "levels deep; --fix writes at most" in " ".join(fixed.stderr.split())
    assert not out.exists()


@pytest.mark.parametrize(
    "text",
    [deep_flow(800), alias_chain(700), alias_chain(5000)],  # libyaml itself stops at 1,000 levels
    ids=["deep", "alias-chain", "long-alias-chain"],
)
def test_nesting_past_the_limit_is_a_parse_finding(tmp_path: Path, text: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    run = bastion("lint", str(spec), "--format", "json")
    assert "Traceback" not in run.stderr
    assert run.returncode == 1
    assert "nests more than" in run.stdout


# -- probe ---------------------------------------------------------------------------------------

MAX_SECONDS = 3
#: Interpreter start-up on a loaded machine, on top of the probe's own time.
STARTUP_SECONDS = 8


@pytest.mark.parametrize("behaviour", [stream_forever, drip], ids=["stream-forever", "drip"])
def test_probe_keeps_its_time_and_memory_limits_against_a_server_that_never_finishes(
    behaviour: Behaviour,
) -> None:
    with hostile_server(behaviour) as url:
        run = bastion(
            "probe", url, "--max-seconds", str(MAX_SECONDS), "--format", "json", timeout=MAX_SECONDS + 30
        )
    assert "Traceback" not in run.stderr
    assert run.returncode in (0, 1), run.stderr
    report = json.loads(run.stdout)
    assert report["seconds"] <= MAX_SECONDS + 1.0
    assert run.seconds <= MAX_SECONDS + STARTUP_SECONDS
    assert run.peak_rss_mb < 200


@pytest.mark.parametrize("behaviour", [stream_forever, drip], ids=["stream-forever", "drip"])
def test_each_request_is_cut_at_its_own_timeout_well_inside_the_run(behaviour: Behaviour) -> None:
    with hostile_server(behaviour) as url:
        client = ProbeClient(url, max_requests=2, max_seconds=60, timeout=0.5)
        started = time.monotonic()
        exchange = client.request("GET", "/")
        took = time.monotonic() - started
    # A drip never completes its head: no response. A stream gets its (cut) body, marked cut.
    assert exchange.status == 0 or exchange.truncated
    assert took < 3.0
    assert client.remaining_seconds() > 50


def test_probe_reads_at_most_max_response_bytes() -> None:
    with hostile_server(stream_forever) as url:
        run = bastion("probe", url, "--max-seconds", "20", "--max-response-bytes", "1000", "--format", "json")
    report = json.loads(run.stdout)
    evidence = [line for check in report["checks"] for line in check["evidence"]]
    assert evidence
    assert all(line.endswith("...") and len(line) < 600 for line in evidence), evidence
    assert report["seconds"] < 10


def test_probe_text_report_strips_terminal_control_sequences() -> None:
    with hostile_server(controls) as url:
        text = bastion("probe", url, "--max-seconds", str(MAX_SECONDS))
        data = bastion("probe", url, "--max-seconds", str(MAX_SECONDS), "--format", "json")
    assert text.returncode == 1, text.stderr
    assert "Internal failure" in text.stdout  # the body excerpt is shown...
    assert "\x1b" not in text.stdout  # ...without its escape sequences
    assert "pwned" not in text.stdout
    assert not any((ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F for c in text.stdout)
    evidence = [line for check in json.loads(data.stdout)["checks"] for line in check["evidence"]]
    assert any(CONTROLS in line for line in evidence)  # JSON keeps the data...
    assert "\x1b" not in data.stdout  # ...escaped as \u001b


def test_lint_text_report_strips_control_sequences_quoted_from_the_description(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  \"\\e]0;pwned\\a\\e[2Jorders\": {}\n"
    )
    text = bastion("lint", str(spec))
    data = bastion("lint", str(spec), "--format", "json")
    assert text.returncode == 1
    assert "orders" in text.stdout
    assert "\x1b" not in text.stdout and "pwned" not in text.stdout
    assert "\x1b]0;pwned\x07" in data.stdout.encode().decode("unicode_escape")


@given(st.text())
def test_terminal_safe_leaves_no_control_character(text: str) -> None:
    clean = terminal_safe(text)
    assert not any((ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F for c in clean)
    assert terminal_safe(clean) == clean


@pytest.mark.parametrize("text", [billion_laughs(), SELF_REFERENCE], ids=["billion-laughs", "self-reference"])
def test_start_up_refuses_an_alias_bomb_or_cycle_at_once(tmp_path: Path, text: str) -> None:
    from bastion.config import load_config
    from bastion.validation.compile import check_description
    from bastion.validation.openapi import OpenAPIError

    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    started = time.process_time()
    with pytest.raises(OpenAPIError, match="alias"):
        check_description(load_config({"openapi": str(spec)}, env={}))
    assert time.process_time() - started < 2.0
