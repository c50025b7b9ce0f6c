"""One request, one reading: bastion against the parsers of the frameworks behind it.

Each hostile request below can be read two ways: a repeated single-valued
parameter, header or cookie, a percent-encoded name, a multipart part with
``name*`` or two ``name`` parameters, a doubled ``boundary``. bastion checks
``role`` against ``enum: [user]`` in every place. The same bytes go to bastion
(middleware around Starlette, served by uvicorn) and to real aiohttp, Werkzeug
and Express servers. Wherever bastion lets the request through, every framework
must read ``role`` as ``user`` or not at all: any other reading ("admin", a
list) is an application running what bastion never checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.security.differential.targets import (
    HERE,
    Target,
    send_raw,
    start_aiohttp,
    start_bastion,
    start_express,
    start_werkzeug,
)

#: Readings that run nothing bastion did not check: the checked value, none at all, or a
#: body the framework itself could not parse (the application gets an error, not a value).
SAFE = (None, "user", "<unreadable>")


@dataclass(frozen=True)
class Case:
    """A hostile request: its query, extra header lines and body."""

    name: str
    query: str = ""
    headers: tuple[str, ...] = ()
    body: bytes = b""
    content_type: str | None = None

    def raw(self) -> bytes:
        target = "/echo" + (f"?{self.query}" if self.query else "")
        lines = [f"POST {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *self.headers]
        if self.content_type is not None:
            lines.append(f"Content-Type: {self.content_type}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def _part(disposition: str, value: str, extra: str = "") -> bytes:
    return f"--b\r\nContent-Disposition: {disposition}\r\n{extra}\r\n{value}\r\n".encode()


def multipart(*parts: bytes, boundary_header: str = "multipart/form-data; boundary=b") -> tuple[bytes, str]:
    return b"".join(parts) + b"--b--\r\n", boundary_header


FORM = "application/x-www-form-urlencoded"

CASES = [
    # The control: one plain reading everywhere; bastion must admit it.
    Case(
        "benign",
        query="role=user",
        headers=("X-Role: user", "Cookie: role=user"),
        body=b"role=user",
        content_type=FORM,
    ),
    # Query strings.
    Case("query repeated, first admin", query="role=admin&role=user"),
    Case("query repeated, last admin", query="role=user&role=admin"),
    Case("query repeated, same value", query="role=user&role=user"),
    Case("query percent-encoded name", query="role=user&%72ole=admin"),
    Case("query bracket array", query="role[]=admin&role=user"),
    Case("query bracket index", query="role=user&role[0]=admin"),
    Case("query encoded brackets", query="role=user&role%5B%5D=admin"),
    Case("query semicolon separator", query="role=user;role=admin"),
    Case("query blank repeat", query="role=user&role"),
    Case("query plus-encoded name", query="ro+le=admin&role=user"),
    # Headers.
    Case("header repeated", headers=("X-Role: user", "X-Role: admin")),
    Case("header repeated, admin first", headers=("X-Role: admin", "X-Role: user")),
    Case("header underscore twin", headers=("X-Role: user", "X_Role: admin")),
    Case("header underscore only", headers=("X_Role: admin",)),
    # Cookies.
    Case("cookie repeated", headers=("Cookie: role=user; role=admin",)),
    Case("cookie repeated, admin first", headers=("Cookie: role=admin; role=user",)),
    Case("cookie two headers", headers=("Cookie: role=user", "Cookie: role=admin")),
    Case("cookie percent-encoded value", headers=("Cookie: role=us%65r",)),
    Case("cookie quoted", headers=('Cookie: role="user"',)),
    Case("cookie comma separated", headers=("Cookie: role=user, role=admin",)),
    # Urlencoded bodies.
    Case("form repeated", body=b"role=user&role=admin", content_type=FORM),
    Case("form repeated, admin first", body=b"role=admin&role=user", content_type=FORM),
    Case("form percent-encoded name", body=b"role=user&%72ole=admin", content_type=FORM),
    Case("form bracket array", body=b"role[]=admin&role=user", content_type=FORM),
    Case("form semicolon separator", body=b"role=user;role=admin", content_type=FORM),
    # Multipart bodies.
    Case(
        "multipart repeated part",
        body=multipart(_part('form-data; name="role"', "user"), _part('form-data; name="role"', "admin"))[0],
        content_type="multipart/form-data; boundary=b",
    ),
    Case(
        "multipart name* beside name",
        body=multipart(
            _part("form-data; name=\"x\"; name*=UTF-8''role", "admin"),
            _part('form-data; name="role"', "user"),
        )[0],
        content_type="multipart/form-data; boundary=b",
    ),
    Case(
        "multipart name* only",
        body=multipart(_part("form-data; name*=UTF-8''role", "admin"))[0],
        content_type="multipart/form-data; boundary=b",
    ),
    Case(
        "multipart two name parameters",
        body=multipart(
            _part('form-data; name="role"; name="x"', "admin"),
            _part('form-data; name="x"; name="role"', "admin"),
        )[0],
        content_type="multipart/form-data; boundary=b",
    ),
    Case(
        "multipart unquoted name",
        body=multipart(_part("form-data; name=role", "admin"), _part('form-data; name="role"', "user"))[0],
        content_type="multipart/form-data; boundary=b",
    ),
    Case(
        "multipart upper-case parameter",
        body=multipart(_part('form-data; NAME="role"', "admin"))[0],
        content_type="multipart/form-data; boundary=b",
    ),
    Case(
        "multipart file part",
        body=multipart(_part('form-data; name="role"; filename="a.txt"', "admin"))[0],
        content_type="multipart/form-data; boundary=b",
    ),
    Case(
        "multipart doubled boundary parameter",
        body=b'--c\r\nContent-Disposition: form-data; name="role"\r\n\r\nadmin\r\n--c--\r\n'
        b'--b\r\nContent-Disposition: form-data; name="role"\r\n\r\nuser\r\n--b--\r\n',
        content_type="multipart/form-data; boundary=b; boundary=c",
    ),
    Case(
        "multipart escaped quote in name",
        body=multipart(
            _part('form-data; name="role\\"; x="', "admin"), _part('form-data; name="role"', "user")
        )[0],
        content_type="multipart/form-data; boundary=b",
    ),
]

CONFIG: dict[str, Any] = {
    "store": "memory://",
    "openapi": str(HERE / "openapi.yaml"),
    "validation": {"reject_unknown_fields": False},
    "logging": {"access": False, "level": "error"},
    "metrics": {"enabled": False},
}


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Target]]:
    started: dict[str, Target] = {}
    try:
        started["bastion"] = start_bastion(CONFIG)
        started["aiohttp"] = start_aiohttp()
        started["werkzeug"] = start_werkzeug()
        express = start_express(Path(tmp_path_factory.mktemp("express")))
        if express is not None:
            started["express"] = express
        yield started
    finally:
        for target in started.values():
            target.stop()


def _readings(status: int, body: Any) -> dict[str, Any]:
    """What a framework read, or nothing when it refused the request itself (no handler ran)."""
    if status != 200:
        return {}
    assert isinstance(body, dict), body
    return body


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_what_bastion_admits_every_framework_reads_the_same_way(
    case: Case, targets: dict[str, Target]
) -> None:
    status, answer = send_raw(targets["bastion"].port, case.raw())
    assert status < 500, f"bastion answered {status}: {answer!r}"
    if case.name == "benign":
        assert status == 200, answer
    if status != 200:
        assert 400 <= status < 500
        assert isinstance(answer, dict)
        assert answer.get("code"), answer
        return
    readings = {"starlette": _readings(status, answer)}
    assert readings["starlette"], answer
    for name, target in targets.items():
        if name != "bastion":
            readings[name] = _readings(*send_raw(target.port, case.raw()))
    bypasses = {
        framework: {place: value for place, value in seen.items() if value not in SAFE}
        for framework, seen in readings.items()
    }
    bypasses = {framework: found for framework, found in bypasses.items() if found}
    assert not bypasses, f"bastion admitted {case.name!r}, which these frameworks read otherwise: {bypasses}"


def test_express_is_part_of_the_comparison(targets: dict[str, Target]) -> None:
    """The Express reading is not silently dropped where node is installed."""
    import shutil

    if shutil.which("node") is None:
        pytest.skip("node is not installed; the Express target needs Node.js")
    assert "express" in targets
