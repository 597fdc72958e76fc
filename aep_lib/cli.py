"""The ``aep`` command line: models, grids of runs, the store, the figures pipeline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Typicality (AEP) of language-model outputs: generate, score, store, and regenerate the figures.",
)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def models() -> None:
    """List the embedded models: whether installed and cached, cache size, vocabulary."""
    from .models import known_models

    rows = known_models()
    typer.echo(f"{'name':<15} {'arch':<7} {'vocab':>7} {'installed':>9} {'cached':>6} {'size MB':>8}  cache")
    for r in rows:
        typer.echo(
            f"{r['name']:<15} {r['architecture']:<7} {r['vocab_size']:>7} {str(r['package_installed']):>9} "
            f"{str(r['cached']):>6} {r['cache_size_mb']:>8}  {r['cache_path']}"
        )
    typer.echo("Any Hugging Face id (org/name) or local folder also works where a model name is asked for.")


@app.command()
def run(
    params_file: Path = typer.Argument(..., help="a grid YAML: models, prompts, n_seeds, max_new_tokens, warps"),
    profile: str = typer.Option("cpu", help="store under outputs/<profile>/store"),
    executor: str = typer.Option("local", help="local (ray: see issue 7)"),
) -> None:
    """Expand a grid (models × prompts × seeds) into generation runs; skip stored ones; run the rest."""
    from .params import ParamsError, load_grid
    from .paths import store_dir
    from .runs import ensure_generations
    from .store import RunStore

    try:
        grid = load_grid(params_file)
    except ParamsError as err:
        _fail(str(err))
    if executor != "local":
        _fail(f"unknown executor {executor!r}; available: local")
    store = RunStore(store_dir(profile))
    runs = ensure_generations(store, grid.models, grid.prompts, grid.seeds, grid.sampling, grid.max_new_tokens,
                              batch_size=grid.batch_size, device=grid.device, dtype=grid.dtype)
    counts = runs["status"].value_counts().to_dict() if len(runs) else {}
    typer.echo(f"{len(runs)} runs in the grid: {counts}; store: {store.root}")
    if counts.get("failed"):
        raise typer.Exit(1)


@app.command()
def runs(
    profile: str = typer.Option("cpu", help="which profile's store"),
    kind: Optional[str] = typer.Option(None, help="generate | score | ..."),
    model: Optional[str] = typer.Option(None),
    prompt_id: Optional[str] = typer.Option(None),
    status: Optional[str] = typer.Option(None, help="ok | failed"),
    limit: int = typer.Option(50, help="rows to show (0: all)"),
) -> None:
    """List stored runs, filtered."""
    import pandas as pd

    from .paths import store_dir
    from .store import RunStore

    filters = {k: v for k, v in dict(kind=kind, model=model, prompt_id=prompt_id, status=status).items() if v}
    df = RunStore(store_dir(profile)).runs(**filters)
    if df.empty:
        typer.echo("no runs")
        return
    cols = [c for c in ("run_id", "kind", "model", "prompt_id", "seed", "temperature", "top_k", "top_p",
                        "n_tokens", "status", "z_samp", "z_raw", "error") if c in df]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40):
        typer.echo(df[cols].head(limit or len(df)).to_string(index=False))
    typer.echo(f"{len(df)} runs ({df['status'].value_counts().to_dict()})")


@app.command()
def figures(
    profile: str = typer.Option("cpu", help="cpu (embedded models) | paper (GPU, hub models)"),
    only: Optional[list[str]] = typer.Option(None, help="notebook name or prefix; repeatable"),
) -> None:
    """Execute the profile's notebooks with papermill into outputs/<profile>/ and write the index."""
    from .params import ParamsError
    from .pipeline import run_figures

    try:
        results = run_figures(profile, only=only or None)
    except ParamsError as err:
        _fail(str(err))
    failed = [r for r in results if r.get("status") != "ok"]
    typer.echo(f"{len(results) - len(failed)} notebooks ok, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)


@app.command()
def score(
    text_file: Path = typer.Argument(..., help="a UTF-8 text file to score"),
    model: str = typer.Option("smollm2-135m", help="embedded short name, hub id or local folder"),
    prompt_chars: int = typer.Option(0, help="the first N characters are context (source), not scored"),
    stride: Optional[int] = typer.Option(None, help="sliding-window stride for texts beyond the context"),
    out: Optional[Path] = typer.Option(None, help="write the per-token table (.csv or .parquet)"),
) -> None:
    """Score a text under a model: log-perplexity, entropy, z, bits per byte."""
    from .models import load_model
    from .score import ScoringError, score_text
    from .stats import summarize

    if not text_file.is_file():
        _fail(f"{text_file}: no such file")
    text = text_file.read_text(encoding="utf-8")
    mdl, tok = load_model(model)
    try:
        scored = score_text(mdl, tok, text[prompt_chars:], prompt=text[:prompt_chars], stride=stride)
    except ScoringError as err:
        _fail(str(err))
    t = scored.tokens
    s = summarize(t["surprisal_raw"], t["entropy_raw"], t["varentropy_raw"])
    typer.echo(f"{model}: {s['n_tokens']} tokens  l={s['l']:.3f}  h={s['h']:.3f}  D={s['D']:+.3f}  "
               f"z={s['z']:+.2f}  bits/byte={scored.bits_per_byte:.3f}")
    if out:
        (t.to_parquet(out, index=False) if out.suffix == ".parquet" else t.to_csv(out, index=False))
        typer.echo(f"per-token table: {out}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
