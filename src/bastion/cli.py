"""The ``bastion`` command line: demo, gateway, lint, probe, config check, keys hash, limits suggest
and errors docs."""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bastion.check.probes.client import MAX_RESPONSE_BYTES

if TYPE_CHECKING:
    from bastion.config import Config

app = typer.Typer(
    name="bastion",
    help="Make an HTTP API production-ready: idempotency, problems, rate limits, validation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from bastion import __version__

        typer.echo(f"bastion {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of an error (for bug reports).")
    ] = False,
) -> None:
    """Make an HTTP API production-ready: idempotency, problems, rate limits, validation."""


config_app = typer.Typer(help="Work with bastion.yaml files.", no_args_is_help=True)
app.add_typer(config_app, name="config")
keys_app = typer.Typer(help="Work with API keys for clients.keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="The configuration file to check.")],
    check_stores: Annotated[
        bool, typer.Option("--check-stores", help="Also connect to every store the file names.")
    ] = False,
) -> None:
    """Check a configuration file and its OpenAPI description: print OK, or every problem (exit 1)."""
    import asyncio

    from bastion.config import load_config
    from bastion.validation.compile import check_file

    problems = check_file(file)
    if not problems and check_stores:
        problems = asyncio.run(_unreachable_stores(load_config(file)))
    if not problems:
        typer.echo("OK")
        return
    typer.echo(f"{file}: {len(problems)} problem(s)", err=True)
    for path, reason in problems:
        typer.echo(f"  {path}: {reason}", err=True)
    raise typer.Exit(1)


async def _unreachable_stores(config: Config) -> list[tuple[str, str]]:
    """``(store, reason)`` for every store of ``config`` that cannot be opened or does not answer."""
    from bastion.asgi import Receive, Scope, Send
    from bastion.stack import Bastion

    async def nothing(scope: Scope, receive: Receive, send: Send) -> None:
        """The application is not needed to open the stores."""

    bastion = Bastion(nothing, config, env={})
    try:
        await bastion.startup()
    except Exception as exc:
        return [("store", f"cannot be opened: {type(exc).__name__}: {exc}")]
    problems: list[tuple[str, str]] = []
    try:
        for resource in bastion.resources:
            ping = getattr(resource, "ping", None)
            if ping is not None and not await ping():
                problems.append((resource.name, "does not answer"))
    finally:
        await bastion.shutdown()
    return problems


@keys_app.command("hash")
def keys_hash(
    key: Annotated[str, typer.Argument(help="The API key, or - to read it from standard input.")],
) -> None:
    """Print the SHA-256 digest of an API key, the form clients.keys lists it in."""
    import sys

    from bastion.clients import key_digest

    if key == "-":
        # Read as bytes: the digest is of the key's bytes, as a client sends them. One line,
        # without its line ending, so `echo KEY | bastion keys hash -` works.
        raw = sys.stdin.buffer.readline().rstrip(b"\r\n")
    else:
        raw = key.encode("utf-8", "surrogateescape")
    if not raw:
        typer.echo("the key is empty", err=True)
        raise typer.Exit(2)
    typer.echo(key_digest(raw))


limits_app = typer.Typer(help="Work with rate limits.", no_args_is_help=True)
app.add_typer(limits_app, name="limits")


@limits_app.command("suggest")
def limits_suggest(
    source: Annotated[
        list[Path] | None, typer.Option("--from", help="Observations saved as JSON (repeatable; merged).")
    ] = None,
    url: Annotated[
        list[str] | None, typer.Option(help="A gateway's admin port, http://127.0.0.1:PORT (repeatable).")
    ] = None,
    percentile: Annotated[float, typer.Option(help="The client percentile to allow.")] = 99.0,
    headroom: Annotated[float, typer.Option(help="The factor above that percentile.")] = 1.5,
    format: Annotated[str, typer.Option("--format", help="table, yaml, json or admin.")] = "table",
    config: Annotated[
        Path | None, typer.Option(help="bastion.yaml: the yaml snippet is its whole rate_limits section.")
    ] = None,
) -> None:
    """Suggest rate limits from each client's observed peak rate, per rule and tier."""
    from bastion.control.suggest import run_suggest

    try:
        text = run_suggest(
            source or [],
            url or [],
            percentile=percentile,
            headroom=headroom,
            format=format,
            config=config,
        )
    except ValueError as exc:
        typer.echo(f"bastion limits suggest: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(text, nl=False)


errors_app = typer.Typer(help="Work with error codes.", no_args_is_help=True)
app.add_typer(errors_app, name="errors")


@errors_app.command("docs")
def errors_docs(
    target: Annotated[
        str | None, typer.Option("--app", help="module:attribute of the application: add its own codes.")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the reference here.")] = None,
) -> None:
    """Write the error-code reference (Markdown): bastion's codes, and with --app the application's."""
    from bastion.appcodes import AppError, render_app_reference
    from bastion.errordocs import render_markdown

    try:
        text = render_markdown() if target is None else render_app_reference(target)
    except AppError as exc:
        typer.echo(f"bastion errors docs: {exc}", err=True)
        raise typer.Exit(2) from None
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        typer.echo(f"bastion errors docs: cannot write {output}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    store: Annotated[
        str | None, typer.Option(help="Store URL (default: SQLite file in the working folder).")
    ] = None,
) -> None:
    """Run the demo checkout API behind every guard, and print a short tour."""
    from bastion.demo.server import run_demo

    run_demo(host=host, port=port, store=store)


@app.command()
def gateway(
    config: Annotated[Path | None, typer.Option(help="bastion.yaml (upstream, guards, gateway).")] = None,
    upstream: Annotated[str | None, typer.Option(help="The upstream API's URL (overrides upstream).")] = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default: gateway.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default: gateway.port).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes on the port.")] = None,
    admin_port: Annotated[int | None, typer.Option(help="Serve metrics, health, ready on this port.")] = None,
    allow_per_process_state: Annotated[
        bool,
        typer.Option(help="Start several workers even on a per-process store (each keeps its own limits)."),
    ] = False,
    watch: Annotated[
        bool, typer.Option(help="Reload when the configuration or OpenAPI file changes (as SIGHUP does).")
    ] = False,
) -> None:
    """Run a reverse proxy that applies every guard in front of an existing HTTP API."""
    from bastion.gateway.server import run_gateway

    run_gateway(
        config,
        upstream=upstream,
        host=host,
        port=port,
        workers=workers,
        admin_port=admin_port,
        allow_per_process_state=allow_per_process_state,
        watch=watch,
    )


@app.command()
def lint(
    spec: Annotated[Path, typer.Argument(help="The OpenAPI description (YAML or JSON).")],
    format: Annotated[str, typer.Option("--format", help="text, json, junit or sarif.")] = "text",
    fail_on: Annotated[
        str | None, typer.Option(help="error, warning or info (default: lint.fail_on, else error).")
    ] = None,
    fix: Annotated[Path | None, typer.Option(help="Write an augmented description to this file.")] = None,
    config: Annotated[Path | None, typer.Option(help="bastion.yaml with a lint: section.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here.")] = None,
    summary: Annotated[
        bool, typer.Option("--summary", help="Only the count and fix hint of each rule (text, json).")
    ] = False,
    baseline: Annotated[
        Path | None, typer.Option(help="Accepted findings (from --write-baseline): only new ones fail.")
    ] = None,
    write_baseline: Annotated[
        Path | None, typer.Option(help="Write the current findings to this file as the baseline.")
    ] = None,
) -> None:
    """Audit an API description for the four pitfalls; exit 1 when a finding reaches --fail-on."""
    from bastion.check.commands import run_lint

    raise typer.Exit(run_lint(spec, format, fail_on, fix, config, output, summary, baseline, write_baseline))


@app.command()
def probe(
    base_url: Annotated[str, typer.Argument(help="The running API, e.g. http://127.0.0.1:8000.")],
    spec: Annotated[Path | None, typer.Option(help="Its OpenAPI description (probes every pitfall).")] = None,
    format: Annotated[str, typer.Option("--format", help="text, json, junit or sarif.")] = "text",
    html: Annotated[Path | None, typer.Option(help="Also write a self-contained HTML report.")] = None,
    max_requests: Annotated[int, typer.Option(help="Stop after this many requests.")] = 300,
    max_seconds: Annotated[float, typer.Option(help="Stop after this many seconds.")] = 60.0,
    burst: Annotated[int, typer.Option(help="Send a burst of N requests to test rate limits (0: off).")] = 0,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here.")] = None,
    max_response_bytes: Annotated[
        int, typer.Option(help="Read at most this many bytes of a response.")
    ] = MAX_RESPONSE_BYTES,
    baseline: Annotated[
        Path | None, typer.Option(help="Accepted failures (from --write-baseline): only new ones fail.")
    ] = None,
    write_baseline: Annotated[
        Path | None, typer.Option(help="Write the current failures to this file as the baseline.")
    ] = None,
    suggest_config: Annotated[
        Path | None, typer.Option(help="Write a starter bastion.yaml that answers every failed check.")
    ] = None,
    chaos: Annotated[
        bool,
        typer.Option(
            "--chaos",
            help="Also send slow, timed-out, repeated and failing requests (with a gateway's fault injection"
            " when it takes Bastion-Fault-* headers).",
        ),
    ] = False,
) -> None:
    """Send bounded real traffic to a running API and report which pitfalls it has; exit 1 on a failure."""
    from bastion.check.commands import run_probe

    raise typer.Exit(
        run_probe(
            base_url,
            spec,
            format,
            html,
            max_requests,
            max_seconds,
            burst,
            output,
            max_response_bytes,
            baseline,
            write_baseline,
            suggest_config,
            chaos,
        )
    )


#: Optional dependencies, by top-level module, and the extra of bastion that brings each.
_EXTRAS = {
    "aiohttp": "gateway",
    "yarl": "gateway",
    "multidict": "gateway",
    "redis": "redis",
    "asyncpg": "postgres",
    "opentelemetry": "otel",
}
_LISTEN_ERRORS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


def user_error_message(exc: BaseException) -> str:
    """One paragraph about ``exc`` for the person who ran the command, never a traceback.

    Mistakes a user can fix (a bad configuration or description, a missing extra, a port
    in use) say what to change; anything else is a bug, and says how to report it.
    """
    from bastion.config import ConfigError
    from bastion.validation.openapi import OpenAPIError

    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, OpenAPIError):
        return f"the OpenAPI description cannot be used: {exc}"
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        module = exc.name.partition(".")[0]
        extra = _EXTRAS.get(module)
        if extra is not None:
            return (
                f"this needs bastion's {extra} extra ({module} is not installed). Install it with "
                f"pip install 'bastion-guards[{extra}]' (from a checkout: pip install -e '.[{extra}]')."
            )
    # A file first: a file that may not be read is EACCES too, and is no port's fault.
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"cannot read {exc.filename}: {exc.strerror}."
    if isinstance(exc, OSError) and exc.errno in _LISTEN_ERRORS:
        return f"cannot listen or connect: {exc.strerror} ({exc}). Choose another --host or --port."
    return (
        f"unexpected error ({type(exc).__name__}). This is a bug in bastion: run the same command "
        "with --debug for the traceback, and report it."
    )


def main() -> None:
    """Entry point of the ``bastion`` script: errors as one paragraph and exit 2, unless --debug."""
    debug = "--debug" in sys.argv[1:]
    try:
        app()
    except Exception as exc:
        if debug:
            raise
        sys.stderr.write(f"bastion: {user_error_message(exc)}\n")
        raise SystemExit(2) from None
