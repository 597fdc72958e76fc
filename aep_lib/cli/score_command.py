"""``aep score``: one text under one model (log-perplexity, entropy, z, bits per byte)."""

from __future__ import annotations

import html as html_escape
from pathlib import Path
from typing import Optional

import typer

from .app import app, fail
from .inputs import check_encoding, check_text, read_input, split_prompt
from .outputs import check_output, write_output

MIN_TOKENS = 2  # default --min-tokens: the fewest scored tokens for which l, h and z mean something


def token_view_page(fragment: str, title: str) -> str:
    """A standalone UTF-8 HTML page around a ``tokenview.token_view`` fragment."""
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html_escape.escape(title)
            + "</title></head><body>" + fragment + "</body></html>\n")


@app.command()
def score(
    text_file: str = typer.Argument(..., help="a text file to score, or '-' for standard input"),
    model: str = typer.Option("smollm2-135m", help="embedded short name, hub id or local folder"),
    prompt_chars: int = typer.Option(0, help="the first N characters are context (source), not scored"),
    stride: Optional[int] = typer.Option(None, help="sliding-window stride for texts beyond the context"),
    out: Optional[Path] = typer.Option(None, help="write the per-token table (.csv or .parquet)"),
    encoding: str = typer.Option("utf-8", help="the text's encoding (e.g. latin-1, cp1252, utf-16)"),
    min_tokens: int = typer.Option(MIN_TOKENS, help="fewest scored tokens accepted (z needs at least 2 to be "
                                   "more than one token's standardised surprisal)"),
    html: Optional[Path] = typer.Option(None, "--html", help="write the token view (each token coloured by its "
                                        "standardised surprisal) as an HTML page"),
) -> None:
    """Score a text under a model: log-perplexity, entropy, z, bits per byte."""
    if min_tokens < 1:
        fail(f"--min-tokens must be at least 1, got {min_tokens}")
    if out is not None and out.suffix not in (".csv", ".parquet"):
        fail(f"--out {out}: the file name must end in .csv or .parquet")
    for path, option in ((out, "--out"), (html, "--html")):
        if path is not None:
            check_output(path, option)  # before the model loads
    check_encoding(encoding)
    label, text = read_input(text_file, encoding, literal=False)
    prompt, scored_part = split_prompt(label, check_text(label, text), prompt_chars)

    from ..core.columns import RAW, typicality_columns
    from ..core.stats import summarize
    from ..engine.embedded import ModelLoadError
    from ..engine.models import load_model
    from ..engine.score import ScoringError, score_text

    try:
        mdl, tok = load_model(model)
    except ModelLoadError as err:
        fail(str(err))
    try:
        scored = score_text(mdl, tok, scored_part, prompt=prompt, stride=stride)
    except ScoringError as err:
        fail(f"{label}: {err}")
    t = scored.tokens
    if len(t) < min_tokens:
        fail(f"{label}: {len(t)} scorable token(s) under {model}, fewer than --min-tokens {min_tokens} (the first "
             "token of a text has no context and is never scored; give a longer text)")
    s = summarize(*(t[c] for c in typicality_columns(RAW)))
    why = f" ({s['z_reason']})" if s["z_reason"] else ""
    typer.echo(f"{model}: {s['n_tokens']} tokens  l={s['l']:.3f}  h={s['h']:.3f}  D={s['D']:+.3f}  "
               f"z={s['z']:+.2f}{why}  bits/byte={scored.bits_per_byte:.3f}")
    if out:
        write_output(out, "--out", lambda tmp: t.to_parquet(tmp, index=False) if out.suffix == ".parquet"
                     else t.to_csv(tmp, index=False))
        typer.echo(f"per-token table: {out}")
    if html:
        from ..report.tokenview import token_view

        title = f"{label} under {model}: {s['n_tokens']} tokens, z = {s['z']:+.2f}"
        page = token_view_page(token_view(t, title=title, prompt=prompt), title)
        write_output(html, "--html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
        typer.echo(f"token view: {html}")
