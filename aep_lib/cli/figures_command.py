"""``aep figures``: execute a profile's notebooks into ``outputs/<profile>/`` and write the index."""

from __future__ import annotations

from typing import Optional

import typer

from .app import app, fail


@app.command()
def figures(
    profile: str = typer.Option("cpu", help="cpu (embedded models) | paper (GPU, hub models)"),
    only: Optional[list[str]] = typer.Option(None, help="notebook name or prefix; repeatable"),
) -> None:
    """Execute the profile's notebooks with papermill into outputs/<profile>/ and write the index."""
    from ..params import ParamsError
    from ..pipeline import run_figures

    try:
        results = run_figures(profile, only=only or None)
    except ParamsError as err:
        fail(str(err))
    failed = [r for r in results if r.get("status") != "ok"]
    typer.echo(f"{len(results) - len(failed)} notebooks ok, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)

