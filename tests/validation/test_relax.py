"""``validation.relax``: relaxed validation for legacy clients, until a date, with notice headers."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bastion import ConfigError
from bastion.asgi import RequestContext
from bastion.clients import ClientIdentifier, key_digest
from bastion.config import ClientsConfig
from bastion.config.validation import RelaxConfig
from bastion.observability.logging import make_logger
from bastion.validation.relax import RelaxTable
from tests.support import LogCapture

from .test_modes import build, client, spec, would_refuse

FUTURE = "2999-12-31"
PAST = "2000-01-01"
MIGRATE = "https://example.com/migrate"
INVALID = {"quantity": 0}
UNKNOWN = {"quantity": 2, "colour": "red"}
CLIENTS = {
    "identify": ["header:X-API-Key", "ip"],
    "keys": [
        {"sha256": key_digest(b"acme-key"), "name": "acme", "tier": "legacy"},
        {"sha256": key_digest(b"other-key"), "name": "other", "tier": "gold"},
    ],
}


def relax(match: dict[str, str], kind: str = "shadow", until: str = FUTURE, **extra: str) -> dict[str, Any]:
    return {"relax": [{"match": match, "relax": kind, "until": until, **extra}], "mode": "enforce"}


def notice(response: httpx.Response) -> dict[str, str | None]:
    """The notice headers; of `Link`, the deprecation and sunset links (not a problem's describedby)."""
    links = [link for link in response.headers.get_list("link") if not link.endswith('rel="describedby"')]
    found = {name: response.headers.get(name) for name in ("deprecation", "sunset")}
    return {**found, "link": ", ".join(links) or None}


@pytest.mark.parametrize(
    ("match", "relaxed", "enforced"),
    [
        ({"tier": "legacy"}, {"x-api-key": "acme-key"}, {"x-api-key": "other-key"}),
        ({"client": "acme"}, {"x-api-key": "acme-key"}, {"x-api-key": "other-key"}),
        (
            {"header": "API-Version: 2023-01-01"},
            {"api-version": " 2023-01-01"},
            {"api-version": "2024-01-01"},
        ),
        ({"tier": "legacy", "header": "API-Version: 1"}, {"x-api-key": "acme-key", "api-version": "1"}, {}),
    ],
)
async def test_each_match_kind_shadows_only_its_requests(
    tmp_path: Path, match: dict[str, str], relaxed: dict[str, str], enforced: dict[str, str]
) -> None:
    bastion, _ = build(tmp_path, spec(), validation=relax(match), clients=CLIENTS)
    async with client(bastion) as http:
        let_through = await http.post("/orders", json=INVALID, headers=relaxed)
        refused = await http.post("/orders", json=INVALID, headers=enforced)
        valid = await http.post("/orders", json={"quantity": 2}, headers=relaxed)
    assert let_through.status_code == 200
    assert would_refuse(let_through) == ["VALIDATION_FAILED"]
    assert let_through.headers["deprecation"].startswith("@")
    assert refused.status_code == 422
    assert notice(refused) == {"deprecation": None, "sunset": None, "link": None}
    # The notice goes with every matching response, not only those where something was relaxed.
    assert valid.status_code == 200 and would_refuse(valid) == []
    assert valid.headers["sunset"] == "Tue, 31 Dec 2999 23:59:59 GMT"


async def test_path_prefix_match(tmp_path: Path) -> None:
    document = spec()
    document["servers"] = [{"url": "/v1"}]
    bastion, _ = build(tmp_path, document, validation=relax({"path_prefix": "/v1/"}))
    async with client(bastion) as http:
        relaxed = await http.post("/v1/orders", json=INVALID)
        query = await http.get("/v1/items?limit=many")
    assert relaxed.status_code == 200 and would_refuse(relaxed) == ["VALIDATION_FAILED"]
    assert query.status_code == 200 and "sunset" in query.headers


async def test_first_matching_entry_wins_and_expired_entries_are_skipped(tmp_path: Path) -> None:
    entries = [
        {"match": {"header": "API-Version: 1"}, "relax": "shadow", "until": PAST},
        {"match": {"header": "API-Version: 1"}, "relax": "allow-unknown-fields", "until": FUTURE},
        {"match": {"header": "API-Version: 1"}, "relax": "shadow", "until": FUTURE},
    ]
    bastion, logs = build(tmp_path, spec(), validation={"relax": entries})
    async with client(bastion) as http:
        unknown = await http.post("/orders", json=UNKNOWN, headers={"api-version": "1"})
        invalid = await http.post("/orders", json=INVALID, headers={"api-version": "1"})
    assert unknown.status_code == 200 and would_refuse(unknown) == []
    assert invalid.status_code == 422  # the second entry won: only unknown fields are allowed
    assert invalid.headers["sunset"] == "Tue, 31 Dec 2999 23:59:59 GMT"
    expired = [r for r in logs.records() if r.get("event", "").startswith("validation relaxation expired")]
    assert [r["entry"] for r in expired] == ["validation.relax.0"]


async def test_allow_unknown_fields_still_refuses_every_other_error(tmp_path: Path) -> None:
    bastion, _ = build(
        tmp_path, spec(), validation=relax({"header": "API-Version: 1"}, "allow-unknown-fields")
    )
    version = {"api-version": "1"}
    async with client(bastion) as http:
        unknown = await http.post("/orders", json=UNKNOWN, headers=version)
        mistyped = await http.post("/orders", json={"quantity": "2", "colour": "red"}, headers=version)
        other = await http.post("/orders", json=UNKNOWN)
    assert unknown.status_code == 200
    assert orjson.loads(unknown.content)["body"] == '{"quantity":2,"colour":"red"}'
    assert would_refuse(unknown) == []
    assert mistyped.status_code == 422
    assert [e["code"] for e in orjson.loads(mistyped.content)["errors"]] == ["TYPE_MISMATCH"]
    assert "sunset" in mistyped.headers
    assert other.status_code == 422


async def test_allow_unknown_fields_keeps_a_list_cut_at_max_errors(tmp_path: Path) -> None:
    config = relax({"header": "API-Version: 1"}, "allow-unknown-fields")
    config["max_errors"] = 2
    bastion, _ = build(tmp_path, spec(), validation=config)
    async with client(bastion) as http:
        response = await http.post(
            "/orders", json={"quantity": 2, "a": 1, "b": 2}, headers={"api-version": "1"}
        )
    assert response.status_code == 422  # an error past the cut could be of another kind


async def test_notice_headers_exact_format(tmp_path: Path) -> None:
    config = relax(
        {"header": "API-Version: 1"},
        until="2027-06-30",
        deprecated="2023-06-30T23:59:59Z",
        link=MIGRATE,
    )
    bastion, _ = build(tmp_path, spec(), validation=config)
    async with client(bastion) as http:
        response = await http.post("/orders", json={"quantity": 2}, headers={"api-version": "1"})
    assert notice(response) == {
        "deprecation": "@1688169599",
        "sunset": "Wed, 30 Jun 2027 23:59:59 GMT",
        "link": f'<{MIGRATE}>; rel="deprecation", <{MIGRATE}>; rel="sunset"',
    }


async def test_until_in_the_past_enforces_without_headers(tmp_path: Path) -> None:
    bastion, _ = build(tmp_path, spec(), validation=relax({"header": "API-Version: 1"}, until=PAST))
    async with client(bastion) as http:
        response = await http.post("/orders", json=INVALID, headers={"api-version": "1"})
    assert response.status_code == 422
    assert notice(response) == {"deprecation": None, "sunset": None, "link": None}


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{" * 40 + b"}" * 40, {}, 400),
        (b'{"quantity": 1, "quantity": 2}', {}, 400),
        ('{"quantity": 1}'.encode("utf-16"), {"content-type": "application/json; charset=utf-16"}, 415),
        (gzip.compress(b'{"quantity": 1}'), {"content-encoding": "br"}, 415),
        (b'{"quantity": 1, "pad": "' + b"x" * 2048 + b'"}', {}, 413),
    ],
)
async def test_security_refusals_are_never_relaxed(
    tmp_path: Path, content: bytes, headers: dict[str, str], status: int
) -> None:
    config = relax({"header": "API-Version: 1"})
    config["max_body_bytes"] = 1024
    bastion, _ = build(tmp_path, spec(), validation=config)
    sent = {"content-type": "application/json", "api-version": "1", **headers}
    async with client(bastion) as http:
        response = await http.post("/orders", content=content, headers=sent)
    assert response.status_code == status


def table(until: str, now: list[float], logs: LogCapture | None = None) -> RelaxTable:
    entry = RelaxConfig.model_validate({"match": {"path_prefix": "/"}, "relax": "shadow", "until": until})
    logger = make_logger(stream=logs) if logs is not None else None
    return RelaxTable([entry], ClientIdentifier(ClientsConfig()), logger=logger, now=lambda: now[0])


def test_an_entry_expires_at_the_end_of_its_day_and_logs_once() -> None:
    end = datetime(2027, 7, 1, tzinfo=UTC).timestamp()
    clock = [end - 0.5]
    logs = LogCapture()
    relaxations = table("2027-06-30", clock, logs)
    scope: dict[str, Any] = {"path": "/orders", "headers": []}
    ctx = RequestContext("t", "s", "r")
    assert relaxations.apply(scope, ctx) is not None
    assert [k for k, _ in ctx.response_headers] == [b"deprecation", b"sunset"]
    clock[0] = end
    for _ in range(3):
        later = RequestContext("t", "s", "r")
        assert relaxations.apply(scope, later) is None
        assert later.response_headers == []
    assert len([r for r in logs.records() if "expired" in r.get("event", "")]) == 1


def test_a_datetime_until_ends_at_that_moment() -> None:
    clock = [datetime(2027, 6, 30, 12, tzinfo=UTC).timestamp() - 1]
    relaxations = table("2027-06-30T12:00:00Z", clock)
    scope: dict[str, Any] = {"path": "/", "headers": []}
    assert relaxations.apply(scope, RequestContext("t", "s", "r")) is not None
    clock[0] += 1
    assert relaxations.apply(scope, RequestContext("t", "s", "r")) is None


@pytest.mark.parametrize(
    ("entry", "key", "reason"),
    [
        ({"match": {}, "relax": "shadow", "until": FUTURE}, "validation.relax.0.match", "empty match"),
        ({"match": {"tier": "x"}, "relax": "loose", "until": FUTURE}, "validation.relax.0.relax", "shadow"),
        (
            {"match": {"tier": "x"}, "relax": "shadow", "until": "2027-13-01"},
            "validation.relax.0.until",
            "ISO",
        ),
        ({"match": {"tier": "x"}, "relax": "shadow"}, "validation.relax.0.until", "required"),
        (
            {"match": {"tier": "x"}, "relax": "shadow", "until": FUTURE, "sunset": "soon"},
            "validation.relax.0.sunset",
            "ISO",
        ),
        (
            {"match": {"header": "API-Version"}, "relax": "shadow", "until": FUTURE},
            "match.header",
            "Name: value",
        ),
        (
            {"match": {"path_prefix": "v1"}, "relax": "shadow", "until": FUTURE},
            "match.path_prefix",
            "starts with /",
        ),
        (
            {"match": {"tier": "x"}, "relax": "shadow", "until": FUTURE, "link": "https://x.com/a b"},
            "validation.relax.0.link",
            "",
        ),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, entry: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(tmp_path, spec(), validation={"relax": [entry]})
    message = str(caught.value)
    assert key in message
    assert reason in message
