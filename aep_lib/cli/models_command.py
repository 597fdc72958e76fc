"""``aep models``: the embedded models, whether installed and cached; ``--verify`` hashes their caches."""

from __future__ import annotations

import typer

from .app import app


@app.command()
def models(
    verify: bool = typer.Option(False, "--verify", help="Hash every byte of each cached model against the "
                                "sha256 recorded when it was cached; exit 1 if one is damaged."),
) -> None:
    """List the embedded models: whether installed and cached, cache size, vocabulary, provenance notes."""
    from ..engine.models import known_models

    rows = known_models()
    width = max(15, *(len(r["name"]) for r in rows))
    typer.echo(f"{'name':<{width}} {'arch':<7} {'vocab':>7} {'installed':>9} {'cached':>6} {'size MB':>8}  cache")
    for r in rows:
        typer.echo(
            f"{r['name']:<{width}} {r['architecture']:<7} {r['vocab_size']:>7} {str(r['package_installed']):>9} "
            f"{str(r['cached']):>6} {r['cache_size_mb']:>8}  {r['cache_path']}"
        )
    for r in rows:
        if r.get("note"):
            typer.echo(f"note: {r['name']}: {r['note']}")
    typer.echo("Any Hugging Face id (org/name) or local folder also works where a model name is asked for.")
    if verify:
        _verify([r["name"] for r in rows])


def _verify(names: list[str]) -> None:
    """One line per model (ok / damaged / not cached / unverified); exit code 1 when one is damaged."""
    from ..engine.embedded import verify_embedded_cache

    typer.echo("verify (sha256 of every cached byte):")
    damaged, width = [], max(15, *(len(n) for n in names))
    for name in names:
        status, reason = verify_embedded_cache(name)
        typer.echo(f"{name:<{width}} {status}" + (f": {reason}" if reason else ""))
        if status == "damaged":
            damaged.append(name)
    if damaged:
        typer.secho(f"error: damaged cache: {', '.join(damaged)}; rebuilt at its next load", fg=typer.colors.RED,
                    err=True)
        raise typer.Exit(1)
