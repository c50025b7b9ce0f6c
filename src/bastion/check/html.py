"""A single self-contained HTML page for a probe result: no scripts, no external assets."""

from __future__ import annotations

from html import escape

from bastion.check.results import PROBE_PITFALLS, ProbeResult

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#1d1d1f}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}
.pass{color:#137333;font-weight:600}.fail{color:#b3261e;font-weight:600}.skip{color:#777}
pre{white-space:pre-wrap;word-break:break-all;background:#f6f6f6;padding:.4rem;margin:.3rem 0;font-size:12px}
.verdict{font-size:1.1rem;padding:.5rem .8rem;border-radius:4px;display:inline-block}
.verdict.fail{background:#fce8e6}.verdict.pass{background:#e6f4ea}
"""


def probe_html(result: ProbeResult) -> str:
    """The probe result as one HTML document."""
    verdict = "fail" if result.failed else "pass"
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
        f"<p class='verdict {verdict}'>{'FAILED' if result.failed else 'passed'}: "
        f"{result.requests} request(s) in {result.seconds:.1f} s</p>"
        f"<table><tr><th>pitfall</th><th>pass</th><th>fail</th><th>skip</th></tr>{rows}</table>"
        f"{''.join(sections)}</body></html>\n"
    )
