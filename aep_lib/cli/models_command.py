"""``aep models``: the embedded models, whether installed and cached."""

from __future__ import annotations

import typer

from .app import app


@app.command()
def models() -> None:
    """List the embedded models: whether installed and cached, cache size, vocabulary."""
    from ..models import known_models

    rows = known_models()
    typer.echo(f"{'name':<15} {'arch':<7} {'vocab':>7} {'installed':>9} {'cached':>6} {'size MB':>8}  cache")
    for r in rows:
        typer.echo(
            f"{r['name']:<15} {r['architecture']:<7} {r['vocab_size']:>7} {str(r['package_installed']):>9} "
            f"{str(r['cached']):>6} {r['cache_size_mb']:>8}  {r['cache_path']}"
        )
    typer.echo("Any Hugging Face id (org/name) or local folder also works where a model name is asked for.")

