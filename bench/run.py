"""Runs every benchmark, one after another, and prints their tables.

    make bench            # or: .venv/bin/python bench/run.py [name ...]

Each script measures bastion beside the peers a user would choose instead, in the
same run, and prints ratios; copy the tables into docs/performance.md.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = ["chain", "validation", "ratelimit", "idempotency", "gateway", "lint"]


def main(names: list[str]) -> int:
    here = Path(__file__).parent
    failed = []
    for name in names or BENCHMARKS:
        script = here / f"{name}.py"
        if not script.exists():
            print(f"# {name}: no bench/{name}.py here, skipped\n", flush=True)
            continue
        print(f"# {name}\n", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(script)])
        print(f"\n({name}: {time.monotonic() - started:.0f} s, exit {code})\n", flush=True)
        if code:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
