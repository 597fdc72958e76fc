"""``aep detect`` and ``aep attribute``: is a text machine-written, and which model wrote it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import app, fail
from .inputs import read_texts


@app.command()
def detect(
    inputs: list[str] = typer.Argument(..., help="text files, '-' (stdin), or literal texts in quotes"),
    model: str = typer.Option("smollm2-135m", help="the scoring model: embedded short name, hub id or local folder"),
    reference: Optional[str] = typer.Option(None, help="reference model on the same vocabulary for the "
                                            "Fast-DetectGPT and Binoculars criteria (default: the model itself)"),
    alpha: float = typer.Option(0.05, help="level of the CLT threshold: machine iff over-typical at this level"),
    threshold: Optional[float] = typer.Option(None, help="a calibrated threshold on the fast_detectgpt criterion "
                                              "(replaces the CLT level)"),
    max_tokens: int = typer.Option(1024, help="score at most this many tokens of each text (0: all)"),
    k: float = typer.Option(0.2, help="Min-K% and Min-K%++: the share of least likely tokens"),
    prompt_chars: int = typer.Option(0, help="the first N characters of each text are context, not scored"),
    tokens_out: Optional[Path] = typer.Option(None, "--tokens-out", help="write the per-token table (.csv or .parquet)"),
) -> None:
    """Is a text machine-generated? Detector scores, the typicality z-test and a verdict with its threshold."""
    import pandas as pd

    from ..detect import DETECTORS, detector_scores, score_prepared, verdict
    from ..embedded import EMBEDDED_MODELS, ModelLoadError
    from ..models import load_model
    from ..score import ScoringError, check_same_vocabulary, tokenize_span

    if not 0 < alpha < 1:
        fail(f"--alpha must be in (0, 1), got {alpha}")
    if not 0 < k <= 1:
        fail(f"--k must be in (0, 1], got {k}")
    if tokens_out is not None and tokens_out.suffix not in (".csv", ".parquet"):
        fail(f"--tokens-out {tokens_out}: the file name must end in .csv or .parquet")
    texts = read_texts(inputs)
    ref_name = reference if reference not in (None, "", model) else None
    if ref_name and model in EMBEDDED_MODELS and ref_name in EMBEDDED_MODELS:
        va, vb = EMBEDDED_MODELS[model].vocab_size, EMBEDDED_MODELS[ref_name].vocab_size
        if va != vb:  # known before loading any weights
            fail(f"vocabulary mismatch: {model} has {va} tokens, {ref_name} {vb}; the cross criteria need one "
                  "shared vocabulary (leave --reference out for the white-box criteria)")
    try:
        mdl, tok = load_model(model)
        ref, ref_tok = load_model(ref_name) if ref_name else (None, None)
        if ref_name:
            check_same_vocabulary(mdl, ref, tok, ref_tok)
    except ModelLoadError as err:
        fail(str(err))
    except ScoringError as err:
        fail(f"{err} (leave --reference out for the white-box criteria)")
    tables = []
    for i, (label, text) in enumerate(texts):
        try:
            prep = tokenize_span(tok, text[prompt_chars:], text[:prompt_chars], max_tokens or None)
            t = score_prepared(mdl, tok, prep, reference=ref)
        except ScoringError as err:
            fail(f"{label}: {err}")
        s = detector_scores(t, prep.scored_text, k=k)
        v = verdict(s, alpha=alpha, threshold=threshold)
        cut = f" (of {prep.n_tokens_available})" if prep.n_tokens_available > s["n_tokens"] else ""
        typer.echo(f"{label}: {s['n_tokens']} tokens{cut} scored by {model}, reference {ref_name or 'itself'}")
        rule = (f"CLT level z_(1-{alpha:g}) = {v['threshold']:.2f}" if threshold is None
                else f"given threshold {v['threshold']:.2f}")
        sign = ">" if v["verdict"] == "machine" else "<="
        typer.echo(f"  verdict: {v['verdict'].upper()}  (fast_detectgpt {v['criterion']:+.2f} {sign} {rule})")
        typer.echo(f"  typicality: z = {s['z']:+.2f} ({v['typicality']}); p two-sided {v['p_two_sided']:.3g}, "
                   f"over-typical {v['p_over']:.3g}, under-typical {v['p_under']:.3g}")
        if not v["clt_ok"]:
            typer.echo("  caution: fewer tokens than the CLT needs (64): p-values and the CLT threshold are rough")
        typer.echo("  scores: " + ", ".join(f"{d} {s[d]:.3f}" for d in DETECTORS if d not in ("z",)))
        t.insert(2, "token_text", [tok.decode([x]) for x in t["token_id"].tolist()])
        tables.append(t.assign(text=label, text_index=i))
    if tokens_out is not None:
        df = pd.concat(tables, ignore_index=True)
        tokens_out.parent.mkdir(parents=True, exist_ok=True)
        (df.to_parquet(tokens_out, index=False) if tokens_out.suffix == ".parquet" else df.to_csv(tokens_out, index=False))
        typer.echo(f"per-token table: {tokens_out} ({len(df)} rows)")


@app.command()
def attribute(
    inputs: list[str] = typer.Argument(..., help="text files, '-' (stdin), or literal texts in quotes"),
    candidates: str = typer.Option("smollm2-135m,gemma-3-270m", help="comma-separated candidate models with "
                                   "their decoding warps: <model>[@t<T>][k<K>][p<P>]"),
    prompt_chars: int = typer.Option(0, help="the first N characters of each text are context, not scored"),
) -> None:
    """Which candidate model (and decoding setting) wrote a text? Ranked by |z|, with confidences."""
    from ..attribution import attribute as rank
    from ..embedded import ModelLoadError
    from ..score import ScoringError

    texts = read_texts(inputs)
    try:
        from ..sampling import parse_variants

        variants = parse_variants(candidates)
    except ValueError as err:
        fail(str(err))
    if len(variants) < 2:
        fail("--candidates needs at least two candidates")
    for label, text in texts:
        try:
            ranked = rank(text[prompt_chars:], variants, prompt=text[:prompt_chars])
        except (ModelLoadError, ScoringError) as err:
            fail(f"{label}: {err}")
        best = ranked.iloc[0]
        typer.echo(f"{label}: most likely {best['candidate']} (confidence {best['confidence']:.2f}, z {best['z']:+.2f})")
        for r in ranked.itertuples():
            typer.echo(f"  {r.rank}. {r.candidate:<28} z {r.z:+8.2f}  confidence {r.confidence:.3f}  "
                       f"bits/byte {r.bpb:.3f}")

