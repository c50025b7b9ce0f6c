"""The bodies of ``bastion lint`` and ``bastion probe``: options in, report and exit code out."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from bastion.check.baseline import BaselineDiff, BaselineError, Entry, Tool
from bastion.config.check import LintConfig

LINT_FORMATS = ("text", "json", "junit", "sarif")
PROBE_FORMATS = ("text", "json", "junit", "sarif")
SEVERITIES = ("error", "warning", "info")


def _fail(message: str) -> int:
    from rich.markup import escape

    from bastion.check.report import terminal_safe

    # The message may quote the description or the server: neither styles nor controls the terminal.
    Console(stderr=True).print(
        f"[bold red]error:[/bold red] {escape(terminal_safe(message))}", highlight=False
    )
    return 2


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def _print(write: Callable[[Console], None], output: Path | None) -> None:
    if output is None:
        write(Console())
        return
    with output.open("w", encoding="utf-8") as out:
        write(Console(file=out, width=160))


def _baseline(
    tool: Tool, current: list[Entry], baseline: Path | None, write: Path | None
) -> BaselineDiff | None:
    """Write the current findings to ``write``, and compare them with ``baseline`` (or what was written).

    Raises :class:`BaselineError` when the baseline cannot be read. With only
    ``write``, the run is compared with the file it wrote: every finding is accepted.
    """
    from bastion.check.baseline import compare, read_baseline, write_baseline

    accepted = read_baseline(baseline, tool) if baseline is not None else None
    if write is not None:
        try:
            write_baseline(write, tool, current)
        except OSError as exc:
            raise BaselineError(f"cannot write the baseline {write}: {exc.strerror}") from None
    if baseline is not None and accepted is not None:
        return compare(str(baseline), accepted, current)
    if write is not None:
        return compare(str(write), current, current)
    return None


def _lint_config(config: Path | None) -> LintConfig:
    if config is None:
        return LintConfig()
    from bastion.config import load_config

    return load_config(config).lint


def run_lint(
    spec: Path,
    fmt: str,
    fail_on: str | None,
    fix: Path | None,
    config: Path | None,
    output: Path | None,
    summary: bool = False,
    baseline: Path | None = None,
    write_baseline: Path | None = None,
) -> int:
    """Lint ``spec``; returns 0, 1 when a finding reaches the threshold, 2 on a usage error."""
    from bastion.check import report
    from bastion.check.document import load_file
    from bastion.check.lint import lint_document
    from bastion.config import ConfigError

    if fmt not in LINT_FORMATS:
        return _fail(f"--format must be one of {', '.join(LINT_FORMATS)}")
    if summary and fmt not in ("text", "json"):
        return _fail("--summary works with --format text or json")
    if fail_on is not None and fail_on not in SEVERITIES:
        return _fail(f"--fail-on must be one of {', '.join(SEVERITIES)}")
    try:
        settings = _lint_config(config)
    except ConfigError as exc:
        return _fail(str(exc))
    if fail_on is not None:
        settings = settings.model_copy(update={"fail_on": fail_on})
    if not spec.is_file():
        return _fail(f"{spec} is not a file")
    started = time.perf_counter()
    doc = load_file(spec)
    result = lint_document(doc, settings, str(spec))
    result.seconds = time.perf_counter() - started
    from bastion.check.baseline import finding_entry

    try:
        diff = _baseline(
            "bastion lint", [finding_entry(f) for f in result.findings], baseline, write_baseline
        )
    except BaselineError as exc:
        return _fail(str(exc))
    if fmt == "text":
        _print(lambda console: report.lint_text(result, console, summary=summary, baseline=diff), output)
    elif fmt == "json":
        _emit(report.lint_json(result, summary=summary, baseline=diff), output)
    elif fmt == "junit":
        _emit(report.lint_junit(result, diff), output)
    else:
        _emit(report.lint_sarif(result, diff), output)
    if fix is not None:
        from bastion.check.document import ParseError
        from bastion.check.fix import FixRefused, write_fixed

        if isinstance(doc, ParseError):
            return _fail(f"cannot fix {spec}: it does not parse")
        try:
            outcome = write_fixed(doc, fix)
        except FixRefused as exc:
            return _fail(f"cannot fix {spec}: {exc}")
        kept = (
            "only additions, the rest as it was"
            if outcome.rewritten is None
            else f"the whole description rewritten, comments and style not kept: {outcome.rewritten}"
        )
        Console(stderr=True).print(
            f"wrote {fix}: {outcome.changes} change(s); {kept}", highlight=False, markup=False
        )
    failed = result.failed if diff is None else diff.failed(result.fail_on)
    return 1 if failed else 0


def run_probe(
    base_url: str,
    spec: Path | None,
    fmt: str,
    html: Path | None,
    max_requests: int,
    max_seconds: float,
    burst: int,
    output: Path | None,
    max_response_bytes: int,
    baseline: Path | None = None,
    write_baseline: Path | None = None,
    suggest_config: Path | None = None,
    chaos: bool = False,
) -> int:
    """Probe the API at ``base_url``; returns 0, 1 when a (new) check fails, 2 on a usage error.

    ``chaos`` adds the chaos probes (:mod:`bastion.check.probes.chaos`).
    """
    from bastion.check import probe_report as report
    from bastion.check.baseline import probe_entries, read_baseline
    from bastion.check.probe import ProbeOptions, SpecError, run_probe_sync

    if fmt not in PROBE_FORMATS:
        return _fail(f"--format must be one of {', '.join(PROBE_FORMATS)}")
    if not base_url.startswith(("http://", "https://")):
        return _fail(f"{base_url!r} is not an http:// or https:// URL")
    if max_requests < 1 or max_seconds <= 0 or burst < 0 or max_response_bytes < 1:
        return _fail(
            "--max-requests, --max-seconds and --max-response-bytes must be positive, --burst zero or more"
        )
    if spec is not None and not spec.is_file():
        return _fail(f"{spec} is not a file")
    if baseline is not None:
        try:  # before any traffic: a baseline that cannot be read stops the run
            read_baseline(baseline, "bastion probe")
        except BaselineError as exc:
            return _fail(str(exc))
    options = ProbeOptions(base_url, spec, max_requests, max_seconds, burst, max_response_bytes, chaos)
    show_progress = fmt == "text" and output is None and sys.stderr.isatty()
    try:
        result = run_probe_sync(options, progress=show_progress)
    except SpecError as exc:
        return _fail(f"cannot use the description: {exc}")
    try:
        diff = _baseline("bastion probe", probe_entries(result), baseline, write_baseline)
    except BaselineError as exc:
        return _fail(str(exc))
    if fmt == "text":
        _print(lambda console: report.probe_text(result, console, diff), output)
    elif fmt == "json":
        _emit(report.probe_json(result, diff), output)
    elif fmt == "junit":
        _emit(report.probe_junit(result, diff), output)
    else:
        _emit(report.probe_sarif(result, diff), output)
    if html is not None:
        from bastion.check.html import probe_html

        html.write_text(probe_html(result, diff), encoding="utf-8")
    if suggest_config is not None:
        from bastion.check.starter import SuggestError, write_starter_config

        try:
            answered = write_starter_config(result, suggest_config)
        except SuggestError as exc:
            return _fail(f"cannot suggest a configuration: {exc}")
        Console(stderr=True).print(
            f"wrote {suggest_config}: a starter bastion.yaml answering {answered} failed check(s)",
            highlight=False,
            markup=False,
        )
    failed = result.failed if diff is None else diff.failed()
    return 1 if failed else 0
