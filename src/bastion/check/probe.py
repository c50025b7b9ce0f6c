"""``bastion probe``: send bounded, real traffic to a running API and report its pitfalls.

The probe only talks to the base URL it is given, stops at ``--max-requests`` or
``--max-seconds`` whichever comes first, reads at most ``--max-response-bytes`` of
each response, and loads the target with a burst only
when ``--burst N`` asks for it. Traffic uses the standard library's
``http.client`` (one connection per request, threads for concurrent duplicates),
so the probe needs no extra dependency.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bastion.check.document import ParseError, load_file
from bastion.check.probes import chaos, errors, idempotency, ratelimit, validation
from bastion.check.probes.base import ProbeContext
from bastion.check.probes.client import MAX_RESPONSE_BYTES, BudgetExhausted, ProbeClient
from bastion.check.probes.payloads import SchemaSampler
from bastion.check.probes.target import TargetAPI, build_target
from bastion.check.results import ProbeResult


class SpecError(Exception):
    """The description given with ``--spec`` cannot be used."""


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """What to probe and how much traffic it may take."""

    base_url: str
    spec: Path | None = None
    max_requests: int = 300
    max_seconds: float = 60.0
    burst: int = 0
    max_response_bytes: int = MAX_RESPONSE_BYTES
    #: Also run the chaos probes (slow, timed-out, repeated and failing requests).
    chaos: bool = False


_STAGES: tuple[tuple[str, Callable[[ProbeContext], None]], ...] = (
    ("errors", errors.run),
    ("validation", validation.run),
    ("idempotency", idempotency.run),
    ("rate-limiting", ratelimit.run),
)


def run_probe(options: ProbeOptions, on_step: Callable[[str, int], None] | None = None) -> ProbeResult:
    """Probe the API; ``on_step(label, requests_sent)`` reports progress."""
    started = time.monotonic()
    target: TargetAPI | None = None
    sampler = SchemaSampler(None)
    if options.spec is not None:
        doc = load_file(options.spec)
        if isinstance(doc, ParseError):
            raise SpecError(f"{options.spec}: {doc.message}")
        if doc.alias_problem is not None:
            raise SpecError(f"{options.spec}: {doc.alias_problem}")
        sampler = SchemaSampler(doc)
        target = build_target(doc, sampler)
    client = ProbeClient(
        options.base_url,
        max_requests=options.max_requests,
        max_seconds=options.max_seconds,
        max_response_bytes=options.max_response_bytes,
    )
    ctx = ProbeContext(client, target, sampler, options.burst)
    if on_step is not None:
        ctx.on_step = lambda label: on_step(label, client.sent)
    stages = (*_STAGES, ("chaos", chaos.run)) if options.chaos else _STAGES
    for pitfall, stage in stages:
        try:
            stage(ctx)
        except BudgetExhausted:
            ctx.add(
                f"{pitfall}-budget",
                pitfall,
                f"{pitfall} probes finished",
                "skip",
                f"the request or time budget ran out ({options.max_requests} requests, "
                f"{options.max_seconds:g} s)",
            )
    errors.finish(ctx)
    return ProbeResult(
        options.base_url,
        str(options.spec) if options.spec else None,
        ctx.checks,
        client.sent,
        time.monotonic() - started,
        client.exhausted,
    )


def run_probe_sync(options: ProbeOptions, *, progress: bool = False) -> ProbeResult:
    """Run the probe, with a rich progress bar on the terminal when ``progress`` is set."""
    if not progress:
        return run_probe(options)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("requests"),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=options.max_requests)

        def on_step(label: str, sent: int) -> None:
            bar.update(task, description=label, completed=sent)

        return run_probe(options, on_step)
