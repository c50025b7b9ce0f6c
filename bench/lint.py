"""Linting the Stripe description: bastion lint against Spectral with the OWASP ruleset, in one run.

    .venv/bin/python bench/lint.py [--spec PATH] [--no-spectral]

Each tool runs once as its own process; wall time and peak RSS (from wait4) are
measured the same way for both. Spectral is installed with npm into bench/.peers/
(git-ignored) when npm is present; without npm its row is skipped with a message.
The machine is shared, so read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE / ".peers"
SPECTRAL = PEERS / "node_modules" / ".bin" / "spectral"
STRIPE = Path("/work/shared/specs/stripe_spec3.yaml")
BUDGET_SECONDS = 5.0
BUDGET_MB = 400.0


def measure(command: list[str], *, stdout: Path, timeout: float = 900.0) -> tuple[float, float, int]:
    """Run ``command``; returns (seconds, peak RSS in MB, exit code)."""
    with stdout.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 1024, process.returncode


def install_spectral() -> str | None:
    """Install Spectral and the OWASP ruleset into bench/.peers; returns why not, or None."""
    if SPECTRAL.exists():
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed"
    PEERS.mkdir(exist_ok=True)
    code = subprocess.call(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "@stoplight/spectral-cli",
            "@stoplight/spectral-owasp-ruleset",
        ],
        cwd=PEERS,
        stdout=subprocess.DEVNULL,
    )
    return None if code == 0 and SPECTRAL.exists() else f"npm install failed (exit {code})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=STRIPE)
    parser.add_argument("--no-spectral", action="store_true")
    args = parser.parse_args()
    spec: Path = args.spec
    if not spec.is_file():
        print(f"{spec} is missing; nothing to measure")
        return 1
    bastion = [str(Path(sys.executable).parent / "bastion")]
    rows: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seconds, mb, code = measure([*bastion, "lint", str(spec), "--format", "json"], stdout=work / "b.json")
        findings = len(json.loads((work / "b.json").read_text())["findings"]) if code in (0, 1) else -1
        rows.append(("bastion lint", seconds, mb, f"{findings} findings (exit {code})"))
        fixed = work / "fixed.yaml"
        seconds, mb, code = measure(
            [*bastion, "lint", str(spec), "--format", "json", "--fix", str(fixed)], stdout=work / "f.json"
        )
        rows.append(
            ("bastion lint --fix", seconds, mb, f"wrote {fixed.stat().st_size // 1024} KiB (exit {code})")
        )
        spectral_note = "skipped: --no-spectral" if args.no_spectral else install_spectral()
        if spectral_note is None:
            ruleset = PEERS / ".spectral-owasp.yaml"
            ruleset.write_text('extends: ["@stoplight/spectral-owasp-ruleset"]\n')
            command = [
                str(SPECTRAL),
                "lint",
                str(spec),
                "--ruleset",
                str(ruleset),
                "--format",
                "json",
                "--quiet",
                "--fail-severity",
                "error",
            ]
            os.environ.setdefault("NODE_OPTIONS", "--max-old-space-size=8192")
            seconds, mb, code = measure(command, stdout=work / "s.json")
            try:
                count = str(len(json.loads((work / "s.json").read_text() or "[]")))
            except json.JSONDecodeError:
                count = "?"
            rows.append(("Spectral + OWASP ruleset", seconds, mb, f"{count} findings (exit {code})"))
        else:
            print(f"Spectral: {spectral_note}; its row is skipped")
    base_s, base_mb = rows[0][1], rows[0][2]
    print(
        f"\nLinting {spec.name} ({spec.stat().st_size / 1e6:.1f} MB), one run each, shared 2-core machine\n"
    )
    print("| tool | wall time | peak RSS | time vs bastion | memory vs bastion | notes |")
    print("|---|---|---|---|---|---|")
    for name, seconds, mb, note in rows:
        ratios = f"{seconds / base_s:.1f}x | {mb / base_mb:.1f}x"
        print(f"| {name} | {seconds:.2f} s | {mb:.0f} MB | {ratios} | {note} |")
    ok = base_s <= BUDGET_SECONDS and base_mb <= BUDGET_MB
    print(f"\nbudget: <= {BUDGET_SECONDS:g} s and <= {BUDGET_MB:g} MB: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
