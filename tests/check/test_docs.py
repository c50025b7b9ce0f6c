"""docs/checker.md names every lint rule and every probe check, so the page cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

from bastion.catalog import RULES

DOC = Path(__file__).resolve().parents[2] / "docs" / "checker.md"
PROBES = Path(__file__).resolve().parents[2] / "src" / "bastion" / "check" / "probes"


def test_every_rule_is_documented() -> None:
    text = DOC.read_text()
    missing = [rule for rule in RULES if f"`{rule}`" not in text]
    assert missing == []


def test_every_probe_check_is_documented() -> None:
    text = DOC.read_text()
    ids: set[str] = set()
    for source in (PROBES / f"{name}.py" for name in ("errors", "idempotency", "ratelimit", "validation")):
        ids.update(
            re.findall(r'"((?:idempotency|errors|rate-limit|validation)-[a-z0-9-]+)"', source.read_text())
        )
    ids.update(
        f"validation-{kind}"
        for kind in re.findall(r'^    "([a-z-]+)": ', (PROBES / "validation.py").read_text(), re.M)
    )
    ids = {i for i in ids if not i.endswith("-")}
    missing = sorted(i for i in ids if f"`{i}`" not in text)
    assert missing == []
    assert len(ids) >= 20
