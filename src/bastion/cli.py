"""The ``bastion`` command line: demo, gateway, lint, probe and config check."""

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

config_app = typer.Typer(help="Work with bastion.yaml files.", no_args_is_help=True)
app.add_typer(config_app, name="config")


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


def main() -> None:
    """Entry point of the ``bastion`` script."""
    app()
