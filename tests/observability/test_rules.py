"""docs/alerts.yaml and docs/grafana-dashboard.json: well formed, and every metric they use exists.

promtool is not available here, so the check is structural: the Prometheus rule
file layout, balanced PromQL, and every metric name and label that the expressions
use is one that bastion's registry (or a guard's documented counter) provides.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bastion.observability.metrics import GUARD_COUNTERS
from tests.observability.apps import make_app

DOCS = Path(__file__).resolve().parents[2] / "docs"
METRIC = re.compile(r"\b((?:http_server|bastion)_[a-z_]+)\b")
MATCHER_LABEL = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
ALWAYS_LABELS = {"job", "instance", "le"}
DURATION = re.compile(r"^\d+[smhd]$")


async def _registry_metrics() -> dict[str, set[str]]:
    """Metric name -> label names, from a real instance's exposition after traffic."""
    app = make_app({"errors": {"framework_adapters": False}}, log_stream=io.BytesIO())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        await http.get("/items/1")
        await http.get("/boom")
        await http.post("/invalid", json={})
        text = (await http.get("/metrics")).text
    metrics: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            metrics.setdefault(sample.name, set()).update(sample.labels)
    for name, labels in GUARD_COUNTERS.items():
        # A guard's counter in the real registry must match its documented labels.
        if name in metrics:
            assert metrics[name] == set(labels), f"{name} has labels {metrics[name]}, documented {labels}"
        metrics.setdefault(name, set(labels))
    return metrics


@pytest.fixture(scope="module")
def known() -> dict[str, set[str]]:
    import asyncio

    return asyncio.run(_registry_metrics())


def check_expression(expr: str, known: dict[str, set[str]]) -> None:
    assert expr.count("(") == expr.count(")"), f"unbalanced parentheses in {expr}"
    assert expr.count("{") == expr.count("}"), f"unbalanced braces in {expr}"
    names = set(METRIC.findall(expr))
    assert names, f"no bastion metric in {expr}"
    unknown = names - set(known)
    assert not unknown, f"{expr} uses metrics the registry does not have: {unknown}"
    available = set(ALWAYS_LABELS)
    for name in names:
        available |= known[name]
    used = set(MATCHER_LABEL.findall(expr))
    for group in GROUPING.findall(expr):
        used |= {label.strip() for label in group.split(",") if label.strip()}
    assert used <= available, f"{expr} uses labels no metric of it has: {used - available}"


def test_alert_rules_are_well_formed(known: dict[str, set[str]]) -> None:
    document = yaml.safe_load((DOCS / "alerts.yaml").read_text())
    assert set(document) == {"groups"}
    names: list[str] = []
    for group in document["groups"]:
        assert isinstance(group["name"], str) and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
            assert DURATION.match(rule["for"])
            assert rule["labels"]["severity"] in {"page", "warning"}
            assert {"summary", "description"} <= set(rule["annotations"])
            check_expression(rule["expr"], known)
            names.append(rule["alert"])
    assert len(names) == len(set(names))
    # The cases the issue names: 5xx, 429, validation failures, idempotency conflicts.
    assert {
        "BastionServerErrorSpike",
        "BastionRateLimitSpike",
        "BastionValidationFailureSpike",
        "BastionIdempotencyConflicts",
    } <= set(names)


def test_idempotency_alert_names_real_problem_codes() -> None:
    from bastion.problems import error_codes

    codes = {entry.code for entry in error_codes()}
    text = (DOCS / "alerts.yaml").read_text()
    for code in re.findall(r"IDEMPOTENCY_[A-Z_]+", text):
        assert code in codes


def test_grafana_dashboard_is_well_formed(known: dict[str, set[str]]) -> None:
    dashboard: dict[str, Any] = orjson.loads((DOCS / "grafana-dashboard.json").read_bytes())
    assert dashboard["title"] and dashboard["uid"]
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job"} <= variables
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = []
    for panel in dashboard["panels"]:
        position = panel["gridPos"]
        assert position["x"] >= 0 and position["x"] + position["w"] <= 24
        if panel["type"] == "row":
            continue
        titles.append(panel["title"])
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            check_expression(target["expr"], known)
    assert any("4xx" in t for t in titles) and any("Idempotency" in t for t in titles)
