"""``validation.relax`` in gateway mode: a legacy client's unknown fields reach the upstream, announced."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import Server, start_gateway

pytestmark = pytest.mark.e2e

SPEC = Path(__file__).parent / "orders-openapi.yaml"


@pytest.fixture(scope="module")
def gateway(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = {
        "upstream": upstream.base,
        "openapi": str(SPEC),
        "store": "memory://",
        "idempotency": {"require": ["POST /orders"]},
        "validation": {
            "relax": [
                {
                    "match": {"header": "API-Version: 2023-01-01"},
                    "relax": "allow-unknown-fields",
                    "until": "2999-12-31",
                    "sunset": "2999-12-31",
                    "link": "https://example.com/migrate",
                },
                {"match": {"path_prefix": "/orders"}, "relax": "shadow", "until": "2001-01-01"},
            ]
        },
    }
    server = start_gateway(tmp_path_factory.mktemp("relax"), config, name="relax")
    yield server
    server.stop()


def order(gateway: Server, body: dict[str, object], **headers: str) -> httpx.Response:
    return httpx.post(
        gateway.base + "/orders",
        json=body,
        headers={"Idempotency-Key": uuid.uuid4().hex, **headers},
        timeout=10,
    )


def test_a_relaxed_client_gets_through_with_the_notice(gateway: Server) -> None:
    legacy = {"item": "book", "quantity": 1, "gift_wrap": True}
    relaxed = order(gateway, legacy, **{"API-Version": "2023-01-01"})
    assert relaxed.status_code == 201, relaxed.text
    assert relaxed.json()["item"] == "book"
    assert relaxed.headers["deprecation"].startswith("@")
    assert relaxed.headers["sunset"] == "Tue, 31 Dec 2999 23:59:59 GMT"
    assert 'rel="deprecation"' in relaxed.headers["link"] and "example.com/migrate" in relaxed.headers["link"]
    # Every other error still refuses the relaxed client.
    legacy_version = {"API-Version": "2023-01-01"}
    wrong = order(gateway, {"item": "book", "quantity": 0, "gift_wrap": True}, **legacy_version)
    assert wrong.status_code == 422
    assert [e["pointer"] for e in wrong.json()["errors"]] == ["/quantity"]


def test_other_clients_and_expired_entries_are_checked_as_usual(gateway: Server) -> None:
    refused = order(gateway, {"item": "book", "quantity": 1, "gift_wrap": True})
    assert refused.status_code == 422
    assert "deprecation" not in refused.headers and "sunset" not in refused.headers
    # The shadow entry on /orders ended in 2001: it relaxes nothing and announces nothing.
    newer = {"API-Version": "2024-01-01"}
    other = order(gateway, {"item": "book", "quantity": 1, "gift_wrap": True}, **newer)
    assert other.status_code == 422 and "deprecation" not in other.headers
