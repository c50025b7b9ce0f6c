"""A single self-contained HTML page for a probe result: no scripts, no external assets.

It opens with a checklist of the failed checks, most urgent first (idempotency for
writes, errors, rate limits, validation, monitoring), each with its fix: the
instruction and the bastion.yaml or ``x-bastion-*`` lines to add.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from bastion.check.probe_checks import PRIORITIES, check_priority
from bastion.check.results import PROBE_PITFALLS, CheckResult, ProbeResult

if TYPE_CHECKING:
    from bastion.check.baseline import BaselineDiff

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#1d1d1f}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}
.pass{color:#137333;font-weight:600}.fail{color:#b3261e;font-weight:600}.skip{color:#777}
pre{white-space:pre-wrap;word-break:break-all;background:#f6f6f6;padding:.4rem;margin:.3rem 0;font-size:12px}
.verdict{font-size:1.1rem;padding:.5rem .8rem;border-radius:4px;display:inline-block}
.verdict.fail{background:#fce8e6}.verdict.pass{background:#e6f4ea}
.checklist li{margin:.6rem 0}.checklist .fix{margin:.2rem 0 0 1.6rem}.accepted{color:#777}
"""


def _item(check: CheckResult, accepted: bool) -> str:
    fix = check.remediation
    where = f" <code>{escape(check.operation)}</code>" if check.operation else ""
    note = " <span class=accepted>(accepted in the baseline)</span>" if accepted else ""
    blocks = "".join(
        f"<div>{escape(label)}</div><pre>{escape(text)}</pre>"
        for label, text in (
            ("bastion.yaml:", fix.config_yaml()),
            (
                "or, on the operation in the description:" if fix.config else "on the operation:",
                fix.extension_yaml(),
            ),
        )
        if text
    )
    return (
        f"<li><label><input type=checkbox disabled> <b>{escape(check.id)}</b>{where}: "
        f"{escape(check.title)}{note}</label><div class=fix>{escape(check.detail)}<br>"
        f"<b>fix:</b> {escape(fix.text)}{blocks}</div></li>"
    )


def checklist(result: ProbeResult, baseline: BaselineDiff | None = None) -> str:
    """The failed checks as an HTML checklist grouped by priority, each with its fix."""
    from bastion.check.baseline import check_entry

    failed = [c for c in result.checks if c.status == "fail"]
    if not failed and (baseline is None or not baseline.fixed):
        return "<h2>Checklist</h2><p>Nothing to fix: no check failed.</p>"
    groups = []
    for priority in PRIORITIES:
        items = [c for c in failed if check_priority(c.id, c.pitfall) == priority]
        if items:
            entries = "".join(
                _item(c, baseline is not None and not baseline.is_new(check_entry(c))) for c in items
            )
            groups.append(f"<h3>{escape(priority)}</h3><ul class=checklist>{entries}</ul>")
    if baseline is not None and baseline.fixed:
        done = "".join(
            f"<li><label><input type=checkbox checked disabled> <b>{escape(e.rule)}</b>"
            f"{f' <code>{escape(e.location)}</code>' if e.location else ''}</label></li>"
            for e in baseline.fixed
        )
        groups.append(f"<h3>fixed since the baseline</h3><ul class=checklist>{done}</ul>")
    return "<h2>Checklist</h2>" + "".join(groups)


def probe_html(result: ProbeResult, baseline: BaselineDiff | None = None) -> str:
    """The probe result as one HTML document: the verdict, the counts, the checklist, every check."""
    failed = result.failed if baseline is None else baseline.failed()
    verdict = "fail" if failed else "pass"
    counts = result.counts()
    rows = "".join(
        f"<tr><td>{escape(p)}</td><td class=pass>{counts[p]['pass']}</td>"
        f"<td class=fail>{counts[p]['fail']}</td><td class=skip>{counts[p]['skip']}</td></tr>"
        for p in PROBE_PITFALLS
    )
    sections = []
    for pitfall in PROBE_PITFALLS:
        checks = [c for c in result.checks if c.pitfall == pitfall]
        if not checks:
            continue
        items = "".join(
            f"<tr><td class={c.status}>{c.status.upper()}</td><td><b>{escape(c.title)}</b><br>"
            f"{escape(c.detail)}{''.join(f'<pre>{escape(e)}</pre>' for e in c.evidence)}</td></tr>"
            for c in checks
        )
        sections.append(f"<h2>{escape(pitfall)}</h2><table>{items}</table>")
    spec = f" with {escape(result.spec)}" if result.spec else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>bastion probe {escape(result.base_url)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>bastion probe {escape(result.base_url)}{spec}</h1>"
        f"<p class='verdict {verdict}'>{'FAILED' if failed else 'passed'}: "
        f"{result.requests} request(s) in {result.seconds:.1f} s"
        f"{f'; {escape(baseline.summary())}' if baseline is not None else ''}</p>"
        f"<table><tr><th>pitfall</th><th>pass</th><th>fail</th><th>skip</th></tr>{rows}</table>"
        f"{checklist(result, baseline)}{''.join(sections)}</body></html>\n"
    )
