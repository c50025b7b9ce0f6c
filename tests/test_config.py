from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from bastion.config import Config, ConfigError, load_config
from bastion.units import Rate

GOOD = """
upstream: http://127.0.0.1:3000
store: memory://
clients:
  identify: [header:X-API-Key, ip]
  trusted_proxies: [127.0.0.1/32]
  keys: [{sha256: 4065d5c673e816508a21c6bb693043960913b126c79b8e9b9923c877117bb090, tier: paid}]
rate_limits:
  on_store_error: closed
  rules:
    - name: per-client
      key: client
      limit: 100/minute
      burst: 20
      tiers: {paid: 1000/minute}
idempotency:
  require: [POST /orders]
  ttl: 24h
  lease: 60s
validation:
  max_body_bytes: 1048576
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bastion.yaml"
    path.write_text(text)
    return path


def test_a_file_loads_with_parsed_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), env={})
    assert config.store == "memory://"
    assert config.rate_limits.rules[0].limit == Rate(100, 60_000)
    assert config.rate_limits.rules[0].tiers["paid"] == Rate(1000, 60_000)
    assert config.idempotency.ttl.ms == 86_400_000
    assert config.idempotency.lease.seconds == 60
    assert config.rate_limits.on_store_error == "closed"


def test_dict_and_config_object_sources() -> None:
    config = load_config({"store": "memory://", "validation": {"max_json_depth": 8}}, env={})
    assert config.validation.max_json_depth == 8
    again = load_config(config, env={})
    assert again == config
    assert load_config(None, env={}) == Config()


def test_environment_overrides_file(tmp_path: Path) -> None:
    env = {
        "BASTION_STORE": "redis://127.0.0.1:6379/3",
        "BASTION_RATE_LIMITS__ON_STORE_ERROR": "open",
        "BASTION_VALIDATION__MAX_BODY_BYTES": "2048",
        "BASTION_TEST_REDIS_URL": "ignored: not a configuration key",
    }
    config = load_config(write(tmp_path, GOOD), env=env)
    assert config.store == "redis://127.0.0.1:6379/3"
    assert config.rate_limits.on_store_error == "open"
    assert config.validation.max_body_bytes == 2048
    # The file's other values survive a partial override of the same section.
    assert config.rate_limits.rules[0].name == "per-client"


def test_unknown_environment_key_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({}, env={"BASTION_STOR": "memory://"})
    assert info.value.problems[0][0] == "stor"
    assert "store" in info.value.problems[0][1]


def test_typo_in_top_level_key_names_it_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "rate_limit:\n  rules: []\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    ((key, reason),) = info.value.problems
    assert key == "rate_limit"
    assert "unknown key" in reason and "rate_limits" in reason


def test_every_problem_is_reported_with_its_path() -> None:
    bad = {
        "store": "mongodb://x",
        "idempotency": {"ttl": "forever", "methods": ["GET"]},
        "rate_limits": {"rules": [{"name": "a", "limit": "100/fortnight", "key": "nobody"}]},
        "clients": {"trusted_proxies": ["not-an-ip"]},
    }
    with pytest.raises(ConfigError) as info:
        load_config(bad, env={})
    paths = {path for path, _ in info.value.problems}
    assert {
        "store",
        "idempotency.ttl",
        "idempotency.methods",
        "rate_limits.rules.0.limit",
        "rate_limits.rules.0.key",
        "clients.trusted_proxies",
    } <= paths
    reasons = dict(info.value.problems)
    assert "mongodb" in reasons["store"]
    assert "forever" in reasons["idempotency.ttl"]


def test_nested_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"validation": {"max_body_byte": 10}}, env={})
    ((key, reason),) = info.value.problems
    assert key == "validation.max_body_byte"
    assert "max_body_bytes" in reason


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "store: memory://\nclients: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "line" in info.value.problems[0][0]


def test_relative_paths_are_taken_from_the_file(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    (sub / "openapi.yaml").write_text("openapi: 3.1.0\n")
    path = sub / "bastion.yaml"
    path.write_text("openapi: ./openapi.yaml\nstore: sqlite:///./state.db\n")
    config = load_config(path, env={})
    assert config.openapi == str(sub / "openapi.yaml")
    assert config.store == f"sqlite:///{sub / 'state.db'}"


runner = CliRunner()


def test_config_check_ok(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "check", str(write(tmp_path, GOOD))], env={})
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "OK"


def test_config_check_names_the_bad_key_and_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, "rate_limit:\n  rules: []\nstore: memory://\n")
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 1
    assert "rate_limit" in result.stderr
    assert "unknown key" in result.stderr


def test_config_check_reports_a_missing_openapi_file(tmp_path: Path) -> None:
    path = write(tmp_path, "openapi: ./missing.yaml\nstore: memory://\n")
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 1
    assert "openapi" in result.stderr and "missing.yaml" in result.stderr and "No such file" in result.stderr


def test_config_check_on_a_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "cannot read" in result.stderr


def test_configuration_page_is_up_to_date_and_complete() -> None:
    from bastion.configdocs import render_markdown, rows

    page = Path(__file__).parent.parent / "docs" / "configuration.md"
    assert page.read_text() == render_markdown(), (
        "docs/configuration.md is stale: run `.venv/bin/python -m bastion.configdocs > docs/configuration.md`"
    )
    undocumented = [path for path, _kind, _default, description in rows() if not description]
    assert undocumented == []
