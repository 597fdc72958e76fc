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


def check_batch_option(batch_size) -> None:
    """``--batch-size``: None (the memory-based default) or at least 1, else a one-line error."""
    if batch_size is not None and batch_size < 1:
        fail(f"--batch-size must be at least 1 (texts scored together), got {batch_size}")


@app.command()
def score(
    text_files: list[str] = typer.Argument(..., help="text files to score, or '-' for standard input"),
    model: str = typer.Option("smollm2-135m", help="embedded short name, hub id or local folder"),
    prompt_chars: int = typer.Option(0, help="the first N characters are context (source), not scored"),
    stride: Optional[int] = typer.Option(None, help="sliding-window stride for texts beyond the context"),
    out: Optional[Path] = typer.Option(None, help="write the per-token table (.csv or .parquet); with several "
                                       "texts one table, a 'text' column naming each"),
    encoding: str = typer.Option("utf-8", help="the text's encoding (e.g. latin-1, cp1252, utf-16)"),
    min_tokens: int = typer.Option(MIN_TOKENS, help="fewest scored tokens accepted (z needs at least 2 to be "
                                   "more than one token's standardised surprisal)"),
    html: Optional[Path] = typer.Option(None, "--html", help="write the token view (each token coloured by its "
                                        "standardised surprisal) as an HTML page (one text)"),
    batch_size: Optional[int] = typer.Option(None, help="texts scored together at most (default: as many as fit "
                                             "in memory; 1: one at a time)"),
) -> None:
    """Score texts under a model: log-perplexity, entropy, z, bits per byte."""
    if min_tokens < 1:
        fail(f"--min-tokens must be at least 1, got {min_tokens}")
    check_batch_option(batch_size)
    if out is not None and out.suffix not in (".csv", ".parquet"):
        fail(f"--out {out}: the file name must end in .csv or .parquet")
    if html is not None and len(text_files) > 1:
        fail(f"--html writes the token view of one text; {len(text_files)} texts given")
    for path, option in ((out, "--out"), (html, "--html")):
        if path is not None:
            check_output(path, option)  # before the model loads
    check_encoding(encoding)
    texts = []
    for text_file in text_files:
        label, text = read_input(text_file, encoding, literal=False)
        texts.append((label, *split_prompt(label, check_text(label, text), prompt_chars)))

    from ..core.columns import RAW, typicality_columns
    from ..core.stats import summarize
    from ..engine.batch_score import score_text_many
    from ..engine.embedded import ModelLoadError
    from ..engine.models import load_model
    from ..engine.score import ScoringError
    from ..engine.spans import tokenize_with_prompt

    try:
        mdl, tok = load_model(model)
    except ModelLoadError as err:
        fail(str(err))
    for label, prompt, scored_part in texts:  # a text with nothing to score fails by its name, before scoring
        ids, first, _ = tokenize_with_prompt(tok, prompt, scored_part)
        if first >= len(ids):
            fail(f"{label}: nothing to score: the continuation is empty after tokenization")
    try:
        results = score_text_many(mdl, tok, [(part, prompt) for _, prompt, part in texts], batch_size, stride)
    except ScoringError as err:
        fail(f"{texts[0][0] if len(texts) == 1 else 'scoring'}: {err}")
    tables = []
    for (label, prompt, _), scored in zip(texts, results):
        t = scored.tokens
        if len(t) < min_tokens:
            fail(f"{label}: {len(t)} scorable token(s) under {model}, fewer than --min-tokens {min_tokens}: "
                 "give a longer text")
        s = summarize(*(t[c] for c in typicality_columns(RAW)))
        why = f" ({s['z_reason']})" if s["z_reason"] else ""
        typer.echo(f"{label + ': ' if len(texts) > 1 else ''}{model}: {s['n_tokens']} tokens  l={s['l']:.3f}  "
                   f"h={s['h']:.3f}  D={s['D']:+.3f}  z={s['z']:+.2f}{why}  bits/byte={scored.bits_per_byte:.3f}")
        tables.append(t.assign(text=label) if len(texts) > 1 else t)
        if html:
            from ..report.tokenview import token_view

            title = f"{label} under {model}: {s['n_tokens']} tokens, z = {s['z']:+.2f}"
            page = token_view_page(token_view(t, title=title, prompt=prompt), title)
    if out:
        import pandas as pd

        table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
        write_output(out, "--out", lambda tmp: table.to_parquet(tmp, index=False) if out.suffix == ".parquet"
                     else table.to_csv(tmp, index=False))
        typer.echo(f"per-token table: {out}")
    if html:
        write_output(html, "--html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
        typer.echo(f"token view: {html}")
