"""``bastion errors docs``: the error-code reference, with an application's own codes added.

The application is tests/apps/ordersapi: a Problem subclass with meaning and action, one
without, and ``code=`` calls on classes imported from bastion three ways (a name, an
alias, the module). Bad ``--app`` values get one line and exit 2, never a traceback.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.appcodes import call_codes, package_files
from bastion.errordocs import render_markdown
from tests.gateway.conftest import clean_env

APPS = Path(__file__).parent / "apps"
APP_CODES = {
    "ORDER_ALREADY_PAID",
    "ORDER_NOT_FOUND",
    "CART_EMPTY",
    "ORDER_ALREADY_SHIPPED",
    "PAYMENT_DECLINED",
}


def bastion_cli(*args: str, cwd: Path = APPS) -> subprocess.CompletedProcess[str]:
    code = "import sys\nsys.argv = ['bastion', *sys.argv[1:]]\nfrom bastion.cli import main\nmain()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        cwd=cwd,
        check=False,
    )


def rows(page: str) -> dict[str, list[str]]:
    """Each code's table row, as cells after the code."""
    found = {}
    for line in page.splitlines():
        match = re.match(r'\| <a id="[a-z0-9-]+"></a>`([A-Z0-9_]+)` \| (.*) \|$', line)
        if match:
            found[match.group(1)] = match.group(2).split(" | ")
    return found


def test_the_reference_lists_bastions_codes_and_the_applications_marked() -> None:
    result = bastion_cli("errors", "docs", "--app", "ordersapi.main:app")
    assert result.returncode == 0, result.stderr
    page = rows(result.stdout)
    ours = rows(render_markdown())
    assert set(page) == set(ours) | APP_CODES
    for code in ours:
        assert page[code][-1] == "bastion"
    assert page["ORDER_ALREADY_PAID"][0] == "409"
    assert page["ORDER_ALREADY_PAID"][-1] == "application: `ordersapi/main.py:24`"
    assert page["ORDER_NOT_FOUND"][:2] == ["404", "Order not found. Raised as `NotFound` with this code."]
    assert page["CART_EMPTY"][0] == "422"
    assert page["ORDER_ALREADY_SHIPPED"] == [
        "409",
        "The order has shipped; it can no longer be changed.",
        "Open a return instead.",
        "application: `ordersapi.errors.OrderAlreadyShipped`",
    ]
    assert page["PAYMENT_DECLINED"][:2] == ["402", "The card issuer declined the payment."]
    assert result.stdout.startswith("# Error codes of ordersapi.main\n")


def test_output_writes_the_same_reference_to_a_file(tmp_path: Path) -> None:
    target = tmp_path / "errors.md"
    result = bastion_cli("errors", "docs", "--app", "ordersapi.main:app", "--output", str(target))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert set(rows(target.read_text(encoding="utf-8"))) >= APP_CODES


def test_without_app_it_is_the_errors_page() -> None:
    result = bastion_cli("errors", "docs")
    assert result.returncode == 0, result.stderr
    assert result.stdout == render_markdown()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nosuchmodule:app", "cannot import 'nosuchmodule': No module named 'nosuchmodule'"),
        ("ordersapi.main:nothing", "module 'ordersapi.main' has no attribute 'nothing'"),
        ("ordersapi.main", "--app takes module:attribute"),
        (":app", "--app takes module:attribute"),
    ],
)
def test_a_bad_app_is_one_line_and_exit_2(target: str, message: str) -> None:
    result = bastion_cli("errors", "docs", "--app", target)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("bastion errors docs: ")
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("raise RuntimeError('no database configured')\n", "RuntimeError: no database configured"),
        ("import nosuchdependency\n", "it needs 'nosuchdependency', which is not installed"),
    ],
)
def test_an_app_that_fails_to_import_says_why(tmp_path: Path, source: str, message: str) -> None:
    (tmp_path / "brokenapp.py").write_text(source)
    result = bastion_cli("errors", "docs", "--app", "brokenapp:app", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("bastion errors docs: importing 'brokenapp' failed: ")
    assert message in result.stderr


def test_an_output_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "folder" / "errors.md"
    result = bastion_cli("errors", "docs", "--output", str(target))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"bastion errors docs: cannot write {target}: ")


def test_only_literal_codes_on_bastions_problem_classes_are_read() -> None:
    found = call_codes(package_files_of_ordersapi(), APPS)
    assert set(found) == {"ORDER_ALREADY_PAID", "ORDER_NOT_FOUND", "CART_EMPTY"}
    assert found["ORDER_NOT_FOUND"].entry.title == "Order not found"
    assert found["CART_EMPTY"].where == ("ordersapi/main.py:39",)


def package_files_of_ordersapi() -> list[Path]:
    sys.path.insert(0, str(APPS))
    try:
        files = package_files("ordersapi.main")
    finally:
        sys.path.remove(str(APPS))
    assert {path.name for path in files} == {"__init__.py", "errors.py", "main.py"}
    return files
