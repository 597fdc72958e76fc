"""``aep score``: one text under one model (log-perplexity, entropy, z, bits per byte)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import app, fail


@app.command()
def score(
    text_file: Path = typer.Argument(..., help="a UTF-8 text file to score"),
    model: str = typer.Option("smollm2-135m", help="embedded short name, hub id or local folder"),
    prompt_chars: int = typer.Option(0, help="the first N characters are context (source), not scored"),
    stride: Optional[int] = typer.Option(None, help="sliding-window stride for texts beyond the context"),
    out: Optional[Path] = typer.Option(None, help="write the per-token table (.csv or .parquet)"),
) -> None:
    """Score a text under a model: log-perplexity, entropy, z, bits per byte."""
    from ..models import load_model
    from ..score import ScoringError, score_text
    from ..stats import summarize

    if not text_file.is_file():
        fail(f"{text_file}: no such file")
    text = text_file.read_text(encoding="utf-8")
    mdl, tok = load_model(model)
    try:
        scored = score_text(mdl, tok, text[prompt_chars:], prompt=text[:prompt_chars], stride=stride)
    except ScoringError as err:
        fail(str(err))
    t = scored.tokens
    s = summarize(t["surprisal_raw"], t["entropy_raw"], t["varentropy_raw"])
    typer.echo(f"{model}: {s['n_tokens']} tokens  l={s['l']:.3f}  h={s['h']:.3f}  D={s['D']:+.3f}  "
               f"z={s['z']:+.2f}  bits/byte={scored.bits_per_byte:.3f}")
    if out:
        (t.to_parquet(out, index=False) if out.suffix == ".parquet" else t.to_csv(out, index=False))
        typer.echo(f"per-token table: {out}")

