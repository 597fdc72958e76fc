"""The ``aep`` Typer application and the one way a command fails (a one-line message, exit code 2)."""

from __future__ import annotations

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Typicality (AEP) of language-model outputs: generate, score, store, and regenerate the figures.",
)


def fail(message: str) -> None:
    """Print ``error: message`` in red on stderr and exit with code 2."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)
