"""The command line answers a user's mistake with one paragraph and exit 2, never a traceback.

Only ``--debug`` shows a traceback. ``config check`` refuses what the gateway would
refuse (it loads and compiles the description) and, with ``--check-stores``, a store
it cannot reach.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.gateway.conftest import clean_env

BROKEN_REF = """\
openapi: 3.1.0
info: {title: broken, version: "1"}
paths:
  /orders:
    post:
      requestBody:
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Missing"}
      responses:
        "201": {description: created}
"""


def _bastion(
    *args: str, env: dict[str, str] | None = None, prelude: str = ""
) -> subprocess.CompletedProcess[str]:
    code = (
        f"{prelude}\nimport sys\nsys.argv = ['bastion', *sys.argv[1:]]\nfrom bastion.cli import main\nmain()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or clean_env(),
        check=False,
    )


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    (tmp_path / "openapi.yaml").write_text(BROKEN_REF)
    config = tmp_path / "bastion.yaml"
    config.write_text("upstream: http://127.0.0.1:9\nopenapi: ./openapi.yaml\nstore: memory://\n")
    return config


def test_config_check_refuses_a_broken_reference(broken: Path) -> None:
    result = _bastion("config", "check", str(broken))
    assert result.returncode == 1
    assert "OK" not in result.stdout
    assert "openapi" in result.stderr
    assert "#/components/schemas/Missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_gateway_names_a_broken_reference_in_one_paragraph(broken: Path) -> None:
    result = _bastion("gateway", "--config", str(broken), "--port", "1")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("bastion: the OpenAPI description cannot be used:")
    assert "#/components/schemas/Missing" in result.stderr


def test_debug_shows_the_traceback(broken: Path) -> None:
    result = _bastion("--debug", "gateway", "--config", str(broken), "--port", "1")
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_a_missing_extra_names_the_install_that_fixes_it(tmp_path: Path) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text("upstream: http://127.0.0.1:9\nstore: memory://\n")
    result = _bastion("gateway", "--config", str(config), prelude="import sys; sys.modules['aiohttp'] = None")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "pip install 'bastion-guards[gateway]'" in result.stderr


def test_a_missing_description_is_one_paragraph(tmp_path: Path) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text("upstream: http://127.0.0.1:9\nopenapi: ./nowhere.yaml\nstore: memory://\n")
    checked = _bastion("config", "check", str(config))
    assert checked.returncode == 1
    assert "nowhere.yaml" in checked.stderr
    started = _bastion("gateway", "--config", str(config), "--port", "1")
    assert started.returncode == 2
    assert "Traceback" not in started.stderr
    assert "nowhere.yaml" in started.stderr


def test_an_environment_override_error_names_the_variable(tmp_path: Path) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text("store: memory://\n")
    result = _bastion(
        "config", "check", str(config), env=clean_env(BASTION_RATE_LIMITS__ON_STORE_ERROR="maybe")
    )
    assert result.returncode == 1
    assert "BASTION_RATE_LIMITS__ON_STORE_ERROR" in result.stderr


def test_check_stores_names_an_unreachable_store(tmp_path: Path) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text("store: memory://\nidempotency:\n  store: redis://127.0.0.1:1/0\n")
    assert _bastion("config", "check", str(config)).returncode == 0
    result = _bastion("config", "check", "--check-stores", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "idempotency:redis: does not answer" in result.stderr


def test_check_stores_passes_with_reachable_stores(tmp_path: Path, redis_url: str) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text(f"store: memory://\nidempotency:\n  store: {redis_url}\n")
    result = _bastion("config", "check", "--check-stores", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


def test_an_unexpected_error_says_it_is_a_bug_without_a_traceback() -> None:
    from bastion.cli import user_error_message

    message = user_error_message(ZeroDivisionError("x"))
    assert "--debug" in message and "bug" in message


def test_a_file_that_may_not_be_read_is_named_not_taken_for_a_port() -> None:
    import errno

    from bastion.cli import user_error_message

    denied = PermissionError(errno.EACCES, "Permission denied", "/etc/bastion.yaml")
    assert user_error_message(denied) == "cannot read /etc/bastion.yaml: Permission denied."
    in_use = OSError(errno.EADDRINUSE, "Address already in use")
    assert "Choose another --host or --port" in user_error_message(in_use)
