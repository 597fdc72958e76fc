"""The ``aep`` Typer application, the one way a command fails (a short one-line message, exit code 2), the
options every command takes (``--model-map``) and ``aep standins``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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


@app.callback()
def main_options(
    model_map: Annotated[Path | None, typer.Option(
        "--model-map", metavar="FILE",
        help="a YAML model map (model name -> local folder or stand-in, with an optional device_map/max_memory) "
             "that every command, grid and notebook of this call uses; sets $AEP_MODEL_MAP (docs/paper.md)")] = None,
) -> None:
    """Typicality (AEP) of language-model outputs: generate, score, store, and regenerate the figures."""
    if model_map is not None:
        use_model_map(str(model_map))


def use_model_map(value: str) -> None:
    """Check the map file(s) now (a bad one is a one-line error before anything loads) and put them in
    ``$AEP_MODEL_MAP``, where model loading, Ray tasks and notebook kernels find them."""
    import os

    from ..engine.model_map import MODEL_MAP_VAR, ModelMapError, check_map_files

    try:
        os.environ[MODEL_MAP_VAR] = check_map_files(value)
    except ModelMapError as err:
        fail(str(err))


@app.command()
def standins(
    write: Annotated[bool, typer.Option("--write", help="write every stand-in now (else each is written on first "
                                                        "use)")] = False,
) -> None:
    """The stand-ins of the paper's models: tiny seeded random models with their architectures and vocabularies
    (params/paper-smoke maps the paper's hub ids to them)."""
    from ..engine.embedded_files import ModelLoadError
    from ..engine.standins import STANDINS, standin_folder, standins_table

    if write:
        try:
            for name in STANDINS:
                standin_folder(name)
        except (ModelLoadError, OSError) as err:
            fail(f"cannot write the stand-ins: {err}")
    for row in standins_table():
        typer.echo(f"{row['name']:24} for {row['stands_for']:34} {row['layers']:>2} layers, width {row['width']:>3}, "
                   f"tokenizer of {row['tokenizer_from']:13} {'written' if row['written'] else 'not written'}  "
                   f"{row['folder']}")
