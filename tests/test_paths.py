"""Canonical request paths: the one spelling every guard, the application and the upstream see."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.config import RoutingConfig
from bastion.gateway.proxy import ProxyApp
from bastion.problems import BadRequest
from bastion.routing import ProtectiveRoutes
from bastion.routing.paths import canonical_path, canonicalize, protective_form


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        (b"/", b"/"),
        (b"/login", b"/login"),
        (b"//login", b"/login"),
        (b"/./login", b"/login"),
        (b"/x/../login", b"/login"),
        (b"/login/", b"/login/"),
        (b"/login//", b"/login/"),
        (b"/a/b/..", b"/a/"),
        (b"/a/.", b"/a/"),
        (b"/..a/.b/...", b"/..a/.b/..."),
        (b"/%6Cogin", b"/login"),
        (b"/%2e%2E/", None),
        (b"/x/%2e%2e/login", b"/login"),
        (b"/a%2db%7e%5F", b"/a-b~_"),
        (b"/caf%c3%a9", b"/caf%C3%A9"),
        (b"/a%20b", b"/a%20b"),
        (b"/a%3bb", b"/a%3Bb"),
        (b'/q"<>', b"/q%22%3C%3E"),
        (b"/caf\xc3\xa9", b"/caf%C3%A9"),
        (b"/.well-known/x", b"/.well-known/x"),
        (b"/a:b@c!$&'()*+,=", b"/a:b@c!$&'()*+,="),
    ],
)
def test_canonical_forms(raw: bytes, canonical: bytes | None) -> None:
    if canonical is None:
        with pytest.raises(BadRequest):
            canonical_path(raw)
    else:
        assert canonical_path(raw) == canonical


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"login",
        b"*",
        b"*@127.0.0.2:18305/",
        b"/a%2Fb",
        b"/a%2fb",
        b"/a%00",
        b"/a%0d%0a",
        b"/a%7F",
        b"/a\x01",
        b"/a b",
        b"/a\\b",
        b"/a%5cb",
        b"/..",
        b"/../login",
        b"/a/../../login",
        b"/%2e%2e/login",
        b"/login;x",
        b"/login;",
        b"/a%",
        b"/a%4",
        b"/a%G0",
    ],
)
def test_paths_with_no_single_reading_are_refused(raw: bytes) -> None:
    with pytest.raises(BadRequest) as refused:
        canonical_path(raw)
    assert refused.value.status == 400


def _scope(raw: bytes, method: str = "GET", host: bytes = b"api.example") -> dict[str, Any]:
    # As uvicorn builds it: ``path`` percent-decoded, ``raw_path`` as received.
    return {
        "type": "http",
        "method": method,
        "path": unquote(raw.decode("latin-1")),
        "raw_path": raw,
        "query_string": b"a=%2F&b",
        "headers": [(b"host", host)],
    }


def test_canonicalize_rewrites_both_path_and_raw_path() -> None:
    scope = _scope(b"/x/..//Caf%c3%a9/%7euser")
    canonicalize(scope)
    assert scope["raw_path"] == b"/Caf%C3%A9/~user"
    assert scope["path"] == "/Café/~user"


def test_a_settled_path_is_not_settled_again_unless_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.routing import paths

    settled = _scope(b"/orders/7")
    rewritten = _scope(b"//orders/./7")
    canonicalize(settled)
    canonicalize(rewritten)
    # The gateway's call, then the boundary's: the second does no work at all.
    monkeypatch.setattr(paths, "_CANONICAL", None)
    monkeypatch.setattr(paths, "canonical_path", None)
    canonicalize(settled)
    canonicalize(rewritten)
    assert rewritten["raw_path"] == b"/orders/7"
    monkeypatch.undo()
    # A raw_path written in between is settled again.
    settled["raw_path"] = b"/a/../b"
    canonicalize(settled)
    assert (settled["raw_path"], settled["path"]) == (b"/b", "/b")


def test_without_raw_path_the_decoded_path_is_used() -> None:
    scope = _scope(b"")
    del scope["raw_path"]
    scope["path"] = "/a//b/./c é"
    canonicalize(scope)
    assert scope["raw_path"] == b"/a/b/c%20%C3%A9"
    assert scope["path"] == "/a/b/c é"


def test_options_asterisk_is_kept_and_other_asterisks_refused() -> None:
    scope = _scope(b"*", "OPTIONS")
    canonicalize(scope)
    assert scope["raw_path"] == b"*"
    with pytest.raises(BadRequest):
        canonicalize(_scope(b"*", "GET"))
    with pytest.raises(BadRequest):
        canonicalize(_scope(b"*x", "OPTIONS"))


def test_absolute_form_only_for_the_host_the_client_addressed() -> None:
    scope = _scope(b"http://API.example/a/../b")
    canonicalize(scope)
    assert scope["raw_path"] == b"/b"
    # A target whose path is already canonical is rewritten all the same.
    scope = _scope(b"http://api.example/b")
    canonicalize(scope)
    assert (scope["raw_path"], scope["path"]) == (b"/b", "/b")
    for target in (b"http://127.0.0.2:9/b", b"http://x@api.example/b", b"ftp://api.example/b"):
        with pytest.raises(BadRequest):
            canonicalize(_scope(target))


def test_protective_form_ignores_case_and_a_trailing_slash_unless_strict() -> None:
    assert protective_form("/Login/", case_sensitive=False, strict_slashes=False) == "/login"
    assert protective_form("/", case_sensitive=False, strict_slashes=False) == "/"
    assert protective_form("/Login/", case_sensitive=True, strict_slashes=True) == "/Login/"
    routes = ProtectiveRoutes([("POST", "/Orders/{id}/pay"), ("*", "/login")], RoutingConfig())
    assert routes.template("POST", "/ORDERS/7/PAY/") == "/Orders/{id}/pay"
    assert routes.template("GET", "/LOGIN") == "/login"
    assert routes.template("GET", "/orders/7/pay") is None
    strict = ProtectiveRoutes([("*", "/login")], RoutingConfig(case_sensitive=True, strict_slashes=True))
    assert strict.template("GET", "/LOGIN") is None
    assert strict.template("GET", "/login/") is None
    assert strict.template("GET", "/login") == "/login"


# Paths built from the pieces that make spellings differ: dots, slashes, escapes (good and
# broken), semicolons, backslashes, case.
_PIECES = st.sampled_from(
    ["/", "//", ".", "..", "/./", "/../", "a", "B", "%2e", "%2E", "%2f", "%41", "%7e", "%c3%a9", "%", "%g",
     ";", "\\", "%00", "~", "-", "@", ":", "\x7f", "é", "%20", " "]
)  # fmt: skip
_PATHS = st.lists(_PIECES, max_size=12).map(lambda parts: ("/" + "".join(parts)).encode("utf-8"))


@settings(max_examples=600, deadline=None)
@given(_PATHS)
def test_canonical_paths_are_stable_and_clean(raw: bytes) -> None:
    try:
        path = canonical_path(raw)
    except BadRequest:
        return
    assert path.startswith(b"/")
    assert canonical_path(path) == path
    for bad in (b"//", b"/./", b"/../"):
        assert bad not in path
    assert not path.endswith((b"/.", b"/.."))
    assert path.isascii()


@settings(max_examples=300, deadline=None)
@given(_PATHS, st.sampled_from(["http://127.0.0.1:3000", "https://[::1]:8443/api"]))
def test_the_forwarded_path_is_the_path_the_guards_saw(raw: bytes, upstream: str) -> None:
    scope = _scope(raw, "POST")
    try:
        canonicalize(scope)
    except BadRequest:
        return
    url = ProxyApp(upstream)._url(scope, ProxyApp(upstream)._base)
    prefix = "/api" if upstream.endswith("/api") else ""
    assert (url.scheme, url.host, url.port) == (
        ("https", "::1", 8443) if prefix else ("http", "127.0.0.1", 3000)
    )
    assert url.raw_path == prefix + scope["raw_path"].decode("ascii")
    assert unquote(url.raw_path) == prefix + scope["path"]
    assert url.raw_query_string == "a=%2F&b"
