"""The built wheel installs into a fresh virtual environment and its command runs.

This is what a user of another project does: build (or download) the wheel,
``pip install 'bastion-guards[gateway]'`` it, and run ``bastion``. Nothing of the
checkout's own environment may be needed for that.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

import bastion

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "bastion-guards"


def _run(args: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [str(a) for a in args], capture_output=True, text=True, check=False, **kwargs
    )


@pytest.mark.e2e
def test_the_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, ROOT], timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheels.glob("bastion_guards-*.whl")
    assert wheel.name.startswith(f"bastion_guards-{bastion.__version__}-")

    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    python = target / "bin" / "python"
    installed = _run([python, "-m", "pip", "install", "-q", f"{wheel}[gateway]"], timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]

    version = _run([target / "bin" / "bastion", "--version"], timeout=60, cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"bastion {bastion.__version__}"

    helped = _run([target / "bin" / "bastion", "gateway", "--help"], timeout=60, cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "--config" in helped.stdout

    # The gateway extra brought the upstream client: the gateway imports without the checkout.
    imported = _run([python, "-c", "import bastion.gateway.proxy, aiohttp"], timeout=60, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr[-2000:]
