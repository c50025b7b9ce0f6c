"""The ``bastion`` command line: demo, gateway, lint, probe, config check and keys hash."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
) -> None:
    """Make an HTTP API production-ready: idempotency, problems, rate limits, validation."""


config_app = typer.Typer(help="Work with bastion.yaml files.", no_args_is_help=True)
app.add_typer(config_app, name="config")
keys_app = typer.Typer(help="Work with API keys for clients.keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="The configuration file to check.")],
) -> None:
    """Check a configuration file: print OK, or every problem with its key path (exit 1)."""
    from bastion.config import check_file

    problems = check_file(file)
    if not problems:
        typer.echo("OK")
        return
    typer.echo(f"{file}: {len(problems)} problem(s)", err=True)
    for path, reason in problems:
        typer.echo(f"  {path}: {reason}", err=True)
    raise typer.Exit(1)


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
) -> None:
    """Run a reverse proxy that applies every guard in front of an existing HTTP API."""
    from bastion.config import ConfigError
    from bastion.gateway.server import run_gateway

    try:
        run_gateway(config, upstream=upstream, host=host, port=port, workers=workers, admin_port=admin_port)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


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
) -> None:
    """Audit an API description for the four pitfalls; exit 1 when a finding reaches --fail-on."""
    from bastion.check.commands import run_lint

    raise typer.Exit(run_lint(spec, format, fail_on, fix, config, output))


@app.command()
def probe(
    base_url: Annotated[str, typer.Argument(help="The running API, e.g. http://127.0.0.1:8000.")],
    spec: Annotated[Path | None, typer.Option(help="Its OpenAPI description (probes every pitfall).")] = None,
    format: Annotated[str, typer.Option("--format", help="text, json or junit.")] = "text",
    html: Annotated[Path | None, typer.Option(help="Also write a self-contained HTML report.")] = None,
    max_requests: Annotated[int, typer.Option(help="Stop after this many requests.")] = 300,
    max_seconds: Annotated[float, typer.Option(help="Stop after this many seconds.")] = 60.0,
    burst: Annotated[int, typer.Option(help="Send a burst of N requests to test rate limits (0: off).")] = 0,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here.")] = None,
    max_response_bytes: Annotated[
        int, typer.Option(help="Read at most this many bytes of a response.")
    ] = 1048576,
) -> None:
    """Send bounded real traffic to a running API and report which pitfalls it has; exit 1 on a failure."""
    from bastion.check.commands import run_probe

    raise typer.Exit(
        run_probe(base_url, spec, format, html, max_requests, max_seconds, burst, output, max_response_bytes)
    )


def main() -> None:
    """Entry point of the ``bastion`` script."""
    app()
