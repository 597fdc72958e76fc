"""The ``aep`` Typer application and the one way a command fails (a short one-line message, exit code 2)."""

from __future__ import annotations

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Typicality (AEP) of language-model outputs: generate, score, store, and regenerate the figures.",
)


MAX_MESSAGE_CHARS = 600  # the longest error line printed; longer ones (a huge bad value quoted) are cut


def short_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` on one line (line breaks become spaces), at most about ``limit`` characters: a longer one
    keeps its start and its end around ``... [N characters cut] ...``."""
    message = " ".join(message.splitlines())
    if len(message) <= limit:
        return message
    head, tail = message[: limit * 2 // 3], message[-(limit // 4):]
    return f"{head} ... [{len(message) - len(head) - len(tail):,} characters cut] ... {tail}"


def fail(message: str) -> None:
    """Print ``error: message`` (``short_message``) in red on stderr and exit with code 2."""
    typer.secho(f"error: {short_message(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)
