"""The checker reads untrusted descriptions: no document makes ``bastion lint`` crash or run away.

Each case runs the real command line in a child process under a 1 GiB address-space
limit and a timeout, so a regression shows as a MemoryError, a crash or a hang.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

MEMORY_LIMIT = 1 << 30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def bastion(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``bastion ARGS`` in a memory-limited child process."""
    return subprocess.run(
        [sys.executable, "-c", "from bastion.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limit_memory,
        check=False,
    )


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
