"""The CI recipe (docs/ci/): valid YAML, real bastion commands and flags, and the exit codes it relies on.

The lint and probe command lines are run exactly as the workflow files spell them
(only ``$SPEC`` and ``$API_URL`` are this test's) against the demo API on a free
port, with baselines written by ``--write-baseline``: they pass with the current
findings accepted, and fail once a new finding appears (a new unsafe operation in
the description; the demo with its rate limits switched off).
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
import typer
import yaml
from typer.testing import CliRunner

from bastion.cli import app
from tests.check.servers import serve, uvicorn

RECIPES = Path(__file__).resolve().parents[2] / "docs" / "ci"
GITHUB = RECIPES / "github-actions.yml"
GITLAB = RECIPES / "gitlab-ci.yml"
#: Shell tokens that end a command: what follows is redirection, background or another command.
_ENDS = {"&", "&&", "||", "|", ";", "2>&1"}

pytestmark = pytest.mark.e2e


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def scripts(path: Path) -> list[str]:
    """Every shell line the recipe runs, continuation lines joined."""
    data = load(path)
    lines: list[str] = []
    if path == GITHUB:
        for job in data["jobs"].values():
            for step in job["steps"]:
                lines += str(step.get("run", "")).replace("\\\n", " ").splitlines()
    else:
        for job in data.values():
            if isinstance(job, dict):
                for key in ("before_script", "script"):
                    lines += [str(line) for line in job.get(key, [])]
    return [line.strip() for line in lines if line.strip()]


def bastion_commands(path: Path) -> list[list[str]]:
    """The arguments of every ``bastion`` command in the recipe, shell syntax after it cut off."""
    commands = []
    for line in scripts(path):
        if not line.startswith("bastion "):
            continue
        words = []
        for token in shlex.split(line)[1:]:
            if token in _ENDS or token.startswith(">"):
                break
            words.append(token)
        commands.append(words)
    return commands


def environment(path: Path) -> dict[str, str]:
    data = load(path)
    return {str(k): str(v) for k, v in (data.get("env") or data.get("variables") or {}).items()}


# -- the files ----------------------------------------------------------------------------------


def test_the_recipes_are_yaml_with_the_expected_shape() -> None:
    github = load(GITHUB)
    assert "on" in github or True in github  # YAML 1.1 reads a bare `on` as true
    assert github["permissions"]["security-events"] == "write"
    steps = github["jobs"]["readiness"]["steps"]
    uses = [step.get("uses", "") for step in steps]
    assert any(u.startswith("github/codeql-action/upload-sarif") for u in uses)
    assert any(u.startswith("mikepenz/action-junit-report") for u in uses)
    gitlab = load(GITLAB)
    assert gitlab["api-lint"]["artifacts"]["reports"]["junit"] == "reports/lint.xml"
    assert gitlab["api-probe"]["artifacts"]["reports"]["junit"] == "reports/probe.xml"
    for path in (GITHUB, GITLAB):
        assert set(environment(path)) == {"SPEC", "API_URL"}
        subcommands = {words[0] for words in bastion_commands(path)}
        assert subcommands == {"lint", "probe", "gateway"}


def test_both_recipes_run_the_same_lint_and_probe_lines() -> None:
    def checks(path: Path) -> list[str]:
        return [line for line in scripts(path) if line.startswith(("bastion lint", "bastion probe"))]

    assert checks(GITHUB) == checks(GITLAB)
    assert len(checks(GITHUB)) == 3


def parse(name: str, args: list[str]) -> None:
    """Parse ``bastion NAME ARGS`` with the CLI's own parser, without running the command."""
    group = typer.main.get_command(app)
    parent = group.context_class(group, info_name="bastion")
    command = group.get_command(parent, name)  # type: ignore[attr-defined]
    assert command is not None, name
    command.make_context(name, list(args), parent=parent)


@pytest.mark.parametrize("path", [GITHUB, GITLAB], ids=["github", "gitlab"])
def test_every_command_and_flag_exists(path: Path) -> None:
    runner = CliRunner()
    for words in bastion_commands(path):
        name, args = words[0], words[1:]
        parse(name, args)  # every option and argument as written
        helped = runner.invoke(app, [name, "--help"], terminal_width=400)
        assert helped.exit_code == 0
        for flag in (a for a in args if a.startswith("--")):
            assert flag in helped.output, f"{name} {flag}"


def test_an_unknown_flag_or_command_would_be_caught() -> None:
    with pytest.raises(Exception, match="No such option"):
        parse("lint", ["spec.yaml", "--baseline-file", "b.json"])
    with pytest.raises(AssertionError):
        parse("lints", ["spec.yaml"])


# -- the lines, run against the demo ------------------------------------------------------------


def demo_without_limits() -> Any:
    """The demo behind bastion with rate limiting off: a regression for the probe to find."""
    from bastion import Bastion
    from bastion.config import load_config
    from bastion.demo.app import create_demo_app
    from bastion.demo.server import demo_config

    data_dir = Path(os.environ["RECIPE_DEMO_DATA"])
    config = demo_config(data_dir, "memory://")
    config["rate_limits"] = {**config["rate_limits"], "enabled": False}
    return Bastion(create_demo_app(data_dir, payment_delay=0.05), load_config(config, env={}), env={})


def demo_spec() -> Path:
    return Path(str(resources.files("bastion.demo").joinpath("openapi.yaml")))


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("demo")
    args = ["-c", "from bastion.cli import main; main()", "demo", "--port", "{port}", "--store", "memory://"]
    with serve(args, cwd=workdir) as url:
        yield url


def recipe_lines(kind: str) -> list[str]:
    return [line for line in scripts(GITHUB) if line.startswith(f"bastion {kind}")]


def run_line(line: str, env: dict[str, str]) -> int:
    """Run one recipe line in-process, its variables from ``env``; returns its exit code."""
    expanded = line
    for name, value in env.items():
        expanded = expanded.replace(f'"${name}"', shlex.quote(value)).replace(f"${name}", value)
    words = []
    for token in shlex.split(expanded)[1:]:
        if token in _ENDS:
            break
        words.append(token)
    result = CliRunner().invoke(app, words)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code


def tolerated(line: str) -> set[int]:
    """The exit codes after which the shell line succeeds."""
    return {0, 1} if line.endswith("|| [ $? -eq 1 ]") else {0}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout as the recipe expects it: the description, .bastion/ and reports/."""
    shutil.copy(demo_spec(), tmp_path / "openapi.yaml")
    (tmp_path / ".bastion").mkdir()
    (tmp_path / "reports").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_lint_lines_pass_with_the_baseline_and_fail_on_a_new_finding(project: Path) -> None:
    env = {**environment(GITHUB), "SPEC": "openapi.yaml"}
    lines = recipe_lines("lint")
    assert run_line('bastion lint "$SPEC"', env) == 1  # the demo's description has findings
    assert run_line('bastion lint "$SPEC" --write-baseline .bastion/lint-baseline.json', env) == 0
    for line in lines:
        assert run_line(line, env) == 0, line
    assert (project / "reports" / "lint.xml").is_file()
    assert (project / "reports" / "lint.sarif").is_file()

    spec = project / "openapi.yaml"
    data = yaml.safe_load(spec.read_text())
    data["paths"]["/refunds"] = {"post": {"responses": {"201": {"description": "refunded"}}}}
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    outcomes = {line: run_line(line, env) for line in lines}
    assert set(outcomes.values()) == {1}
    # The SARIF line lets the step pass (the report is still uploaded); the JUnit line fails the build.
    assert [line for line, code in outcomes.items() if code not in tolerated(line)] == [lines[-1]]
    assert "/refunds" in (project / "reports" / "lint.xml").read_text()


def test_probe_line_passes_with_the_baseline_and_fails_on_a_new_finding(
    project: Path, demo_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    [line] = recipe_lines("probe")
    env = {**environment(GITHUB), "SPEC": "openapi.yaml", "API_URL": demo_url}
    written = line.replace("--baseline", "--write-baseline")
    assert run_line(written, env) == 0
    assert run_line(line, env) == 0
    report = (project / "reports" / "probe.xml").read_text()
    assert "<testsuite" in report
    assert (project / "reports" / "probe.html").read_text().startswith("<!doctype html>")

    monkeypatch.setenv("RECIPE_DEMO_DATA", str(project / "data"))
    with serve(uvicorn("tests.check.test_ci_recipe:demo_without_limits", factory=True)) as regressed:
        assert run_line(line, {**env, "API_URL": regressed}) == 1
    root = ET.parse(project / "reports" / "probe.xml").getroot()
    failure = root.find(".//testcase[@name='rate-limit-429']/failure")
    assert failure is not None and failure.text is not None
    assert "fix: " in failure.text  # the failure's body ends with its remediation
    assert "limit: 100/minute" in failure.text
