"""Suggested rate limits from observed traffic: the logic of ``bastion limits suggest``.

It reads the observations of one or more processes (the admin endpoint's JSON, or files
holding it; see :mod:`bastion.ratelimit.observed`), merges them per rule and tier,
and for each gives the clients' p50/p95/p99/max peak rates over the rule's window, a
suggested limit (the rate at a percentile, times a headroom, rounded up to a readable
number) and how many clients that limit would have refused over the recorded period.
The suggestions print as a table, JSON, a ``rate_limits:`` snippet for bastion.yaml, or
the admin API calls that would apply them.
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bastion.ratelimit.observed import (
    FORMAT,
    OBSERVED_PATH,
    REGISTER_SLOTS,
    bucket_value,
    decode_register,
)
from bastion.units import Rate

#: Where a future admin API would change one rule (``--format admin``).
ADMIN_RULE_PATH = "/_bastion/admin/rate-limits/rules/"
FORMATS = ("table", "yaml", "json", "admin")
# Readable mantissas, in tenths, a suggestion is rounded up to per power of ten.
_READABLE_TENTHS = (10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100)


@dataclass
class Observed:
    """One rule at one limit, merged over every snapshot read."""

    rule: str
    tier: str | None
    limit: str
    period_ms: int
    seconds: float = 0.0
    peaks: dict[str, int] = field(default_factory=dict)
    register: bytearray = field(default_factory=lambda: bytearray(REGISTER_SLOTS))
    dropped_peak: int = 0
    window_error: int = 0

    def add(self, sketch: dict[str, Any]) -> None:
        """Merge one process's sketch: peaks by client and register slots, each the larger."""
        self.seconds = max(self.seconds, float(sketch["seconds"]))
        peaks = self.peaks
        for client, peak in sketch["peaks"].items():
            if peak > peaks.get(client, 0):
                peaks[client] = int(peak)
        register = self.register
        for slot, value in enumerate(decode_register(sketch["register"])):
            if value > register[slot]:
                register[slot] = value
        self.dropped_peak = max(self.dropped_peak, int(sketch["dropped_peak"]))
        self.window_error = max(self.window_error, int(sketch["window_error"]))

    def distribution(self) -> list[tuple[float, float]]:
        """``(rate, clients)`` ascending: kept peaks above every dropped one exactly, the rest estimated.

        With nothing dropped, every client is a kept peak. Otherwise the clients at or
        below the largest dropped peak come from the register: a slot holds the largest
        bucket of the Poisson(``load``) clients hashed to it, so the clients' distribution
        ``F`` is recovered from the slots' ``G`` by ``F = ln(1 + G (e^load - 1)) / load``,
        then scaled to the distinct clients the register counts.
        """
        counted: dict[float, float] = {}
        tail = [peak for peak in self.peaks.values() if peak > self.dropped_peak]
        for peak in tail:
            counted[float(peak)] = counted.get(float(peak), 0) + 1
        if self.dropped_peak:
            slots: dict[int, int] = {}
            for value in self.register:
                if value:
                    slots[value - 1] = slots.get(value - 1, 0) + 1
            load = self.load()
            total = sum(slots.values())
            below = share = 0.0
            low: dict[float, float] = {}
            for bucket in sorted(slots):
                below += slots[bucket] / total
                clients_below = math.log1p(below * math.expm1(load)) / load
                if bucket_value(bucket) <= self.dropped_peak:
                    low[bucket_value(bucket)] = clients_below - share
                share = clients_below
            scale = max(self.distinct() - len(tail), 0) / (sum(low.values()) or 1)
            for middle, fraction in low.items():
                counted[middle] = counted.get(middle, 0) + fraction * scale
        return sorted(counted.items())

    def load(self) -> float:
        """Clients per register slot, by linear counting."""
        return math.log(REGISTER_SLOTS / max(self.register.count(0), 1))

    def distinct(self) -> int:
        """Distinct clients: exact with nothing dropped, else by linear counting over the register."""
        if not self.dropped_peak:
            return len(self.peaks)
        return max(len(self.peaks), round(REGISTER_SLOTS * self.load()))

    def refused(self, limit: int) -> float:
        """Clients whose peak passed ``limit``: exact when ``limit >= dropped_peak``."""
        return sum(n for value, n in self.distribution() if value > limit)


def quantile(distribution: list[tuple[float, float]], percentile: float) -> float:
    """The nearest-rank percentile of an ascending ``(value, count)`` list (0 when empty)."""
    total = sum(count for _value, count in distribution)
    if total == 0:
        return 0.0
    rank = max(1, math.ceil(percentile / 100 * total))
    seen = 0.0
    for value, count in distribution:
        seen += count
        # (Estimated counts are fractions: a rounding error must not skip the rank.)
        if seen >= rank - 1e-6:
            return value
    return distribution[-1][0]


def readable(value: float) -> int:
    """``value`` rounded up to a readable whole number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 x 10^k)."""
    if value <= 10:
        return max(1, math.ceil(value))
    # Integer arithmetic: 1.2 x 100 in floating point is a hair above 120.
    scale = int(10 ** (len(str(math.ceil(value))) - 2))
    return next(tenths * scale for tenths in _READABLE_TENTHS if tenths * scale >= value)


@dataclass
class Suggestion:
    """What ``limits suggest`` says about one rule at one limit."""

    rule: str
    tier: str | None
    current: str
    period_ms: int
    seconds: float
    clients: int
    p50: float
    p95: float
    p99: float
    max: float
    suggested: str
    suggested_limit: int
    refused: int
    #: Whether ``refused`` and the tail above the suggestion are exact (no dropped peak above it).
    exact: bool
    #: How far above the truth a peak may be (0: every window was counted exactly).
    window_error: int


def suggest(observed: Observed, percentile: float, headroom: float) -> Suggestion:
    """The suggestion for one merged rule and tier."""
    distribution = observed.distribution()
    at = quantile(distribution, percentile)
    limit = readable(at * headroom)
    return Suggestion(
        rule=observed.rule,
        tier=observed.tier,
        current=observed.limit,
        period_ms=observed.period_ms,
        seconds=round(observed.seconds, 3),
        clients=observed.distinct(),
        p50=quantile(distribution, 50),
        p95=quantile(distribution, 95),
        p99=quantile(distribution, 99),
        max=distribution[-1][0] if distribution else 0.0,
        suggested=str(Rate(limit, observed.period_ms)),
        suggested_limit=limit,
        refused=round(observed.refused(limit)),
        exact=limit >= observed.dropped_peak,
        window_error=observed.window_error,
    )


def merge(snapshots: list[dict[str, Any]]) -> list[Observed]:
    """Merge the snapshots of several processes (or files) by rule and tier, in first-seen order."""
    merged: dict[tuple[str, str | None], Observed] = {}
    for snapshot in snapshots:
        if snapshot.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} snapshot (format {snapshot.get('format')!r})")
        for sketch in snapshot["sketches"]:
            key = (sketch["rule"], sketch["tier"])
            found = merged.get(key)
            if found is None:
                found = merged[key] = Observed(
                    sketch["rule"], sketch["tier"], sketch["limit"], int(sketch["period_ms"])
                )
            found.add(sketch)
    return list(merged.values())


def read_snapshots(files: list[Path], urls: list[str], timeout: float = 10.0) -> list[dict[str, Any]]:
    """The snapshots in ``files`` and those the admin ports at ``urls`` serve."""
    found = [json.loads(path.read_text()) for path in files]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--url takes an http:// or https:// address, not {url!r}")
        address = url.rstrip("/") + OBSERVED_PATH
        try:
            # The scheme is checked above: no file: or custom scheme reaches urlopen.
            with urllib.request.urlopen(address, timeout=timeout) as response:  # noqa: S310
                found.append(json.loads(response.read()))
        except OSError as exc:
            raise ValueError(f"cannot read {address}: {exc}") from None
    return found


def _rate(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def render_table(suggestions: list[Suggestion], percentile: float, headroom: float) -> str:
    """A plain-text table, one line per rule and tier."""
    head = ("rule", "tier", "limit", "clients", "p50", "p95", "p99", "max", "suggested", "refused")
    rows: list[tuple[str, ...]] = [head]
    for s in suggestions:
        refused = str(s.refused) if s.exact else f"~{s.refused}"
        values = (s.p50, s.p95, s.p99, s.max)
        rows.append(
            (s.rule, s.tier or "-", s.current, str(s.clients), *map(_rate, values), s.suggested, refused)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    seconds = max((s.seconds for s in suggestions), default=0.0)
    lines.append("")
    lines.append(
        f"Rates are each client's peak requests per window of the rule's period, over {seconds:.0f} s "
        f"recorded. Suggested: p{percentile:g} x {headroom:g}, rounded up; refused: clients whose peak "
        "passed it (~: estimated from the register)."
    )
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _by_rule(suggestions: list[Suggestion]) -> dict[str, dict[str | None, Suggestion]]:
    rules: dict[str, dict[str | None, Suggestion]] = {}
    for s in suggestions:
        rules.setdefault(s.rule, {})[s.tier] = s
    return rules


def render_yaml(suggestions: list[Suggestion], config: dict[str, Any] | None = None) -> str:
    """A ``rate_limits:`` snippet for bastion.yaml.

    With ``config`` (the parsed bastion.yaml), the whole ``rate_limits`` section with the
    suggested limits in place, ready to replace the file's own; rules it does not list (an
    operation's ``x-bastion-rate-limit``) follow as comments. Without, only the names and
    limits, to copy into the rules of the same names.
    """
    rules = _by_rule(suggestions)
    if config is None:
        section: dict[str, Any] = {"rules": [_limits(name, tiers) for name, tiers in rules.items()]}
        note = "# Suggested limits: copy each into the rule of the same name in bastion.yaml.\n"
        return note + yaml.safe_dump({"rate_limits": section}, sort_keys=False)
    section = dict(config.get("rate_limits") or {})
    configured = [dict(rule) for rule in section.get("rules") or []]
    for rule in configured:
        found = rules.pop(str(rule.get("name")), None)
        if found is not None:
            rule.update({k: v for k, v in _limits(rule["name"], found).items() if k != "name"})
    section["rules"] = configured
    text = "# rate_limits with the suggested limits: replace the section, then reload (SIGHUP).\n"
    text += yaml.safe_dump({"rate_limits": section}, sort_keys=False)
    for name, tiers in rules.items():
        text += f"# {name}: x-bastion-rate-limit {_limits(name, tiers).get('limit', '')}\n"
    return text


def _limits(name: str, tiers: dict[str | None, Suggestion]) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name}
    if None in tiers:
        entry["limit"] = tiers[None].suggested
    own = {tier: s.suggested for tier, s in tiers.items() if tier is not None}
    if own:
        entry["tiers"] = own
    return entry


def render_admin(suggestions: list[Suggestion], base: str) -> str:
    """The admin API calls that would apply the suggestions (for the admin API to come)."""
    lines = ["# The admin API that applies these is not available yet; the calls it would take:"]
    for name, tiers in _by_rule(suggestions).items():
        body = {k: v for k, v in _limits(name, tiers).items() if k != "name"}
        url = base.rstrip("/") + ADMIN_RULE_PATH + urllib.parse.quote(name, safe="")
        lines.append(f"curl -X PATCH '{url}' -H 'Content-Type: application/json' -d '{json.dumps(body)}'")
    return "\n".join(lines) + "\n"


def render_json(suggestions: list[Suggestion]) -> str:
    """Every suggestion as a JSON list."""
    return json.dumps([asdict(s) for s in suggestions], indent=2) + "\n"


def run_suggest(
    files: list[Path],
    urls: list[str],
    *,
    percentile: float = 99.0,
    headroom: float = 1.5,
    format: str = "table",
    config: Path | None = None,
) -> str:
    """The output of ``bastion limits suggest``; raises ``ValueError`` on bad arguments or input."""
    if format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}")
    if not 0 < percentile <= 100:
        raise ValueError("--percentile must be above 0 and at most 100")
    if headroom <= 0:
        raise ValueError("--headroom must be above 0")
    if not files and not urls:
        raise ValueError("give --from FILE or --url http://127.0.0.1:ADMIN_PORT")
    observed = merge(read_snapshots(files, urls))
    suggestions = [suggest(o, percentile, headroom) for o in observed]
    if format == "table":
        return render_table(suggestions, percentile, headroom)
    if format == "json":
        return render_json(suggestions)
    if format == "admin":
        return render_admin(suggestions, urls[0] if urls else "http://127.0.0.1:ADMIN_PORT")
    parsed = yaml.safe_load(config.read_text()) if config is not None else None
    return render_yaml(suggestions, parsed if isinstance(parsed, dict) else None)
