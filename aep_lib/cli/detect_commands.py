"""``aep detect``, ``aep calibrate`` and ``aep attribute``: is a text machine-written (at a stated
false-positive rate), how to calibrate that on human texts of your own, and which model wrote it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from .app import app, fail
from .inputs import check_encoding, read_texts, split_prompt
from .outputs import check_output, write_output

FPR_HELP = "target false-positive rate on human text, in (0, 0.5]"


def load_scorer(model: str, reference: str | None):
    """``(model, tokenizer, reference model or None)``, or a one-line failure (unknown model, vocabulary
    mismatch between the two)."""
    from ..engine.embedded import EMBEDDED_MODELS, ModelLoadError
    from ..engine.models import load_model
    from ..engine.score import ScoringError, check_same_vocabulary

    if reference and model in EMBEDDED_MODELS and reference in EMBEDDED_MODELS:
        va, vb = EMBEDDED_MODELS[model].vocab_size, EMBEDDED_MODELS[reference].vocab_size
        if va != vb:  # known before loading any weights
            fail(f"vocabulary mismatch: {model} has {va} tokens, {reference} {vb}; the cross criteria need one "
                 "shared vocabulary (leave --reference out for the white-box criteria)")
    try:
        mdl, tok = load_model(model)
        ref, ref_tok = load_model(reference) if reference else (None, None)
        if reference:
            check_same_vocabulary(mdl, ref, tok, ref_tok)
    except ModelLoadError as err:
        fail(str(err))
    except ScoringError as err:
        fail(f"{err} (leave --reference out for the white-box criteria)")
    return mdl, tok, ref, ref_tok


def open_calibration(path: Optional[Path], model: str) -> dict:
    """The calibration of ``--calibration``, else the one shipped for ``model``, validated whole and checked
    against its content digest (``calibration_files.load_calibration``); one-line failures."""
    from ..analysis.calibration import CalibrationError, load_calibration, shipped_calibration
    from ..corpora import DataIntegrityError, DataNotFoundError

    try:
        if path is None:
            path = shipped_calibration(model)
        return load_calibration(path)
    except DataNotFoundError:
        fail(f"no calibration is shipped for {model}: build one from human texts of your own with "
             f"'aep calibrate TEXTS... --model {model} --out cal.json' and pass --calibration cal.json")
    except (CalibrationError, DataIntegrityError) as err:
        fail(str(err))


def describe_corpus(cal: dict) -> str:
    """One line: how many human texts of which sets, and which part measured the FPR."""
    c, held = cal["corpus"], cal["settings"].get("heldout_frac", 0.5)
    sets = c.get("datasets", {})
    what = f"of {len(sets)} sets ({', '.join(sets)})" if len(sets) > 1 else f"({c['name']})"
    return f"{c['n_texts']} human texts {what}; FPR measured on a held-out {held:g} of them, never used for thresholds"


def plain(value):
    """``value`` with numpy scalars as Python numbers and NaN/inf as None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def percent(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def render(r: dict) -> list[str]:
    """The lines ``aep detect`` prints for one text (``r``: one element of its ``--json`` output)."""
    d, t = r["decision"], r["typicality"]
    cut = f" (of {r['n_tokens_available']})" if r["n_tokens_available"] > r["n_tokens"] else ""
    lines = [f"{r['input']}: {r['n_tokens']} tokens{cut} scored by {r['model']}, reference {r['reference']}"]
    low, high = d["bin"]
    sign = ">" if d["verdict"] == "machine" else "<="
    raw_sign = sign if d["direction"].startswith("higher") else {">": "<", "<=": ">="}[sign]
    at = f"a {100 * d['fpr_target']:g}% target false-positive rate" if d["fpr_target"] else "a given threshold"
    lines.append(f"  verdict: {d['verdict'].upper()} at {at}")
    lines.append(f"    {d['detector']} {d['score']:+.3f} {raw_sign} threshold {d['threshold_raw']:+.3f} "
                 f"({d['direction']}; {d['unit']}) for texts of {low}-{high} tokens")
    lines.append(f"    false-positive rate measured on {d['n_heldout']} held-out human texts of {low}-{high} tokens: "
                 f"{percent(d['fpr_heldout'])} [{percent(d['fpr_low'])}, {percent(d['fpr_high'])}] "
                 f"(95% Clopper-Pearson)")
    if len(d["heldout_by_dataset"]) > 1:
        lines.append("    by kind of text: " + ", ".join(f"{name} {fp}/{n}" for name, (fp, n) in
                                                        d["heldout_by_dataset"].items()))
    if not math.isnan(d["human_percentile"]):
        lines.append(f"    this text scores above {percent(d['human_percentile'])} of the {d['n_calibration']} human "
                     "calibration texts of its length")
    lines.append(f"    calibration: {r['calibration']['path']}: {r['calibration']['corpus']}")
    lines.append(f"  typicality z-test (H0: {t['null']}): z = {t['z']:+.2f} ({t['typicality']} at "
                 f"{t['alpha']:g}); p two-sided {t['p_two_sided']:.3g}, over-typical {t['p_over']:.3g}, "
                 f"under-typical {t['p_under']:.3g}")
    lines.append("    it tests whether this model with these settings wrote the text, not whether a human did; "
                 "to rank candidate models: aep attribute")
    if not t["clt_ok"]:
        lines.append("    caution: fewer tokens than the CLT needs (64): the p-values are rough")
    lines += [f"  warning: {w}" for w in d["warnings"]]
    lines.append("  scores (value, unit, direction):")
    for name, s in r["scores"].items():
        lines.append(f"    {name:<15} {s['value']:+10.4f}  {s['unit']:<20} {s['direction']}")
    return lines


def check_detect_options(fpr, alpha, k, detector, tokens_out, max_tokens, encoding) -> None:
    """``aep detect``'s options that no model is needed to check: each bad one a one-line error."""
    from ..analysis.calibration import DETECTORS, check_fpr

    try:
        check_fpr(fpr)
    except ValueError as err:
        fail(f"--fpr: {err}")
    if not 0 < alpha < 1:
        fail(f"--alpha must be in (0, 1), got {alpha}")
    if k is not None and not 0 < k <= 1:
        fail(f"--k must be in (0, 1], got {k}")
    if detector not in DETECTORS:
        fail(f"--detector {detector!r}: unknown; known: {', '.join(DETECTORS)}")
    if tokens_out is not None and tokens_out.suffix not in (".csv", ".parquet"):
        fail(f"--tokens-out {tokens_out}: the file name must end in .csv or .parquet")
    if tokens_out is not None:
        check_output(tokens_out, "--tokens-out")
    if max_tokens is not None and max_tokens < 0:
        fail(f"--max-tokens must be 0 (all) or more, got {max_tokens}")
    check_encoding(encoding)


def score_for_decision(texts, model_name, mdl, tok, ref, budget, stride, batch_size):
    """``[(prepared span, per-token table)]`` of ``texts`` (``(label, prompt, text)``), scored in batches of at
    most ``batch_size`` texts; a text too long without a stride, or with fewer scored tokens than a decision
    needs, is a one-line error naming it."""
    from ..analysis.calibration import MIN_SCORED_TOKENS
    from ..analysis.detect import score_prepared_many
    from ..engine.spans import ScoringError, tokenize_span

    preps = []
    for label, prompt, text in texts:
        try:
            preps.append(tokenize_span(tok, text, prompt, budget))
        except ScoringError as err:
            if "nothing to score" not in str(err):
                fail(f"{label}: {err}")
            fail(f"{label}: 0 scored token(s) under {model_name}; a decision needs at least {MIN_SCORED_TOKENS}: "
                 "give a longer text")
    for (label, _, _), prep in zip(texts, preps):
        if len(prep.ids) - prep.first < MIN_SCORED_TOKENS:
            fail(f"{label}: {len(prep.ids) - prep.first} scored token(s) under {model_name}; a decision needs at "
                 f"least {MIN_SCORED_TOKENS}: give a longer text")
    try:
        tables = score_prepared_many(mdl, tok, preps, reference=ref, stride=stride, batch_size=batch_size)
    except ScoringError as err:
        fail(f"{texts[0][0] if len(texts) == 1 else 'scoring'}: {err}")
    return list(zip(preps, tables))


def check_batch_size(batch_size) -> None:
    if batch_size is not None and batch_size < 1:
        fail(f"--batch-size must be at least 1 (texts scored together), got {batch_size}")


BATCH_HELP = "texts scored together at most (default: as many as fit in memory; 1: one at a time)"


@app.command()
def detect(
    inputs: list[str] = typer.Argument(..., help="text files, '-' (stdin), or literal texts in quotes"),
    model: str = typer.Option("smollm2-135m", help="the scoring model: embedded short name, hub id or local folder"),
    reference: Optional[str] = typer.Option(None, help="reference model on the same vocabulary for the "
                                            "Fast-DetectGPT and Binoculars criteria (default: the model itself)"),
    calibration: Optional[Path] = typer.Option(None, help="calibration file (aep calibrate); default: the one "
                                               "shipped for the model"),
    fpr: float = typer.Option(0.05, help=FPR_HELP),
    detector: str = typer.Option("fast_detectgpt", help="the detector that decides (aep_lib.analysis.detect.DETECTORS)"),
    threshold: Optional[float] = typer.Option(None, help="decide with this threshold on the detector's raw "
                                              "value instead (its held-out FPR is still measured)"),
    alpha: float = typer.Option(0.05, help="level of the typicality z-test (H0: sampled from the model)"),
    max_tokens: Optional[int] = typer.Option(None, help="score at most this many tokens (default: the longest "
                                             "length the calibration covers; 0: all)"),
    stride: Optional[int] = typer.Option(None, help="sliding-window stride for texts beyond the context window"),
    k: Optional[float] = typer.Option(None, help="Min-K% and Min-K%++ share (default: the calibration's)"),
    prompt_chars: int = typer.Option(0, help="the first N characters of each text are context, not scored"),
    allow_mismatch: bool = typer.Option(False, help="use a calibration made with another model or reference of "
                                        "the same tokenizer (with a warning)"),
    as_json: bool = typer.Option(False, "--json", help="print everything as JSON (one list, one object per text)"),
    encoding: str = typer.Option("utf-8", help="the texts' encoding (e.g. latin-1, cp1252, utf-16)"),
    tokens_out: Optional[Path] = typer.Option(None, "--tokens-out", help="write the per-token table (.csv or .parquet)"),
    batch_size: Optional[int] = typer.Option(None, help=BATCH_HELP),
) -> None:
    """Is a text machine-generated? A verdict at a target false-positive rate, with the rate measured on
    held-out human texts of its length, the detector scores and the typicality z-test."""
    import pandas as pd

    from ..analysis.calibration import DETECTORS, compatibility, decide, model_identity, rows_frame
    from ..analysis.detect import detector_scores, typicality_test
    from ..engine.models import resolved_dtype

    check_detect_options(fpr, alpha, k, detector, tokens_out, max_tokens, encoding)
    check_batch_size(batch_size)
    texts = [(label, *split_prompt(label, text, prompt_chars)) for label, text in read_texts(inputs, encoding)]
    # a given calibration file is validated (and its digest checked) before any model loads
    cal = open_calibration(calibration, model) if calibration is not None else None
    ref_name = reference if reference not in (None, "", model) else None
    mdl, tok, ref, ref_tok = load_scorer(model, ref_name)
    cal = cal or open_calibration(None, model)
    k = float(cal["settings"]["min_k"]) if k is None else k
    ident = model_identity(model, tok)
    errors, warnings = compatibility(cal, ident, model_identity(ref_name, ref_tok) if ref_name else ident,
                                     {"min_k": k, "dtype": resolved_dtype()}, allow_mismatch)
    if errors:
        fail(errors[0])
    budget = int(cal["settings"]["max_tokens"]) if max_tokens is None else (max_tokens or None)
    rows = rows_frame(cal)
    results, tables = [], []
    scored = score_for_decision(texts, model, mdl, tok, ref, budget, stride, batch_size)
    for i, ((label, _prompt, _text), (prep, t)) in enumerate(zip(texts, scored)):
        s = detector_scores(t, prep.scored_text, k=k)
        given = None if threshold is None else DETECTORS[detector].direction * threshold
        results.append({
            "input": label, "model": model, "reference": ref_name or "itself", "n_tokens": s["n_tokens"],
            "n_tokens_available": prep.n_tokens_available,
            "decision": decide(cal, s, detector, fpr, threshold=given, warnings=warnings, rows=rows),
            "typicality": typicality_test(s, model, alpha),
            "calibration": {"path": cal["path"], "corpus": describe_corpus(cal), "model": cal["model"]["name"],
                            "reference": cal["reference"]["name"], "settings": cal["settings"]},
            "scores": {n: {"value": s[n], "unit": DETECTORS[n].unit, "direction": DETECTORS[n].direction_text,
                           "description": DETECTORS[n].description} for n in DETECTORS},
        })  # fmt: skip
        t.insert(2, "token_text", [tok.decode([x]) for x in t["token_id"].tolist()])
        tables.append(t.assign(text=label, text_index=i))
    if as_json:
        typer.echo(json.dumps(plain(results), indent=2))
    else:
        for r in results:
            typer.echo("\n".join(render(r)))
    if tokens_out is not None:
        df = pd.concat(tables, ignore_index=True)
        write_output(tokens_out, "--tokens-out", lambda tmp: df.to_parquet(tmp, index=False)
                     if tokens_out.suffix == ".parquet" else df.to_csv(tmp, index=False))
        typer.echo(f"per-token table: {tokens_out} ({len(df)} rows)", err=as_json)


@app.command()
def calibrate(
    inputs: list[str] = typer.Argument(..., help="human-written texts: files, '-' (stdin) or literal texts"),
    model: str = typer.Option("smollm2-135m", help="the scoring model the calibration is for"),
    reference: Optional[str] = typer.Option(None, help="reference model on the same vocabulary (default: itself)"),
    out: Path = typer.Option(..., help="the calibration file to write (.json)"),
    name: Optional[str] = typer.Option(None, help="the corpus' name (default: 'user corpus')"),
    max_tokens: int = typer.Option(256, help="score at most this many tokens of each text; the longest length "
                                   "the calibration covers"),
    k: float = typer.Option(0.2, help="Min-K% and Min-K%++: the share of least likely tokens"),
    heldout_frac: float = typer.Option(0.5, help="share of the texts held out to measure the false-positive rate"),
    seed: int = typer.Option(0, help="seed of the held-out split and of the lengths drawn within each bin"),
    stride: Optional[int] = typer.Option(None, help="sliding-window stride for texts beyond the context window"),
    encoding: str = typer.Option("utf-8", help="the texts' encoding"),
    batch_size: Optional[int] = typer.Option(None, help=BATCH_HELP),
) -> None:
    """Calibrate machine-text decisions on human texts: per length bin, each detector's score distribution
    on one part of the texts and the false-positive rate measured on the rest, written as a file for
    'aep detect --calibration'."""
    import pandas as pd

    from ..analysis.calibration import (
        DEFAULT_DETECTOR,
        MIN_SCORED_TOKENS,
        MIN_TEXTS,
        bin_thresholds,
        build_calibration,
        calibration_rows,
        corpus_identity,
        model_identity,
        rows_frame,
        save_calibration,
        split_texts,
    )
    from ..analysis.detect import score_prepared_many
    from ..analysis.length_bins import length_edges
    from ..engine.models import resolved_dtype
    from ..engine.spans import ScoringError, tokenize_span

    if out.suffix != ".json":
        fail(f"--out {out}: the calibration file name must end in .json")
    check_output(out, "--out")
    if not 0 < k <= 1:
        fail(f"--k must be in (0, 1], got {k}")
    if not 0 < heldout_frac < 1:
        fail(f"--heldout-frac must be in (0, 1), got {heldout_frac}")
    check_batch_size(batch_size)
    try:
        edges = length_edges(max_tokens)
    except ValueError as err:
        fail(f"--max-tokens: {err}")
    check_encoding(encoding)
    texts = read_texts(inputs, encoding)
    if len(texts) < MIN_TEXTS:
        fail(f"{len(texts)} texts given; a calibration needs at least {MIN_TEXTS} human texts (one part sets the "
             "thresholds, the rest measures their false-positive rate; hundreds give usable intervals)")
    ref_name = reference if reference not in (None, "", model) else None
    mdl, tok, ref, ref_tok = load_scorer(model, ref_name)
    corpus = name or "user corpus"
    frame = pd.DataFrame({"dataset": corpus, "pair": range(len(texts)), "prompt": "", "text": [t for _, t in texts]})
    spans = {}
    for i, (label, text) in enumerate(texts):
        try:
            spans[i] = tokenize_span(tok, text, "", max_tokens)
        except ScoringError as err:
            if "nothing to score" not in str(err):
                fail(f"{label}: {err}")
    order = sorted(spans)
    try:
        scored = score_prepared_many(mdl, tok, [spans[i] for i in order], reference=ref, stride=stride,
                                     batch_size=batch_size)
    except ScoringError as err:
        fail(f"scoring: {err}")
    tables = dict(zip(order, scored))
    short = [i for i in range(len(texts)) if len(tables.get(i, ())) < MIN_SCORED_TOKENS]
    if short:
        typer.secho(f"warning: {len(short)} text(s) with fewer than {MIN_SCORED_TOKENS} scored tokens left out: "
                    + ", ".join(texts[i][0] for i in short[:5]), fg=typer.colors.YELLOW, err=True)
    frame = frame.drop(index=short)
    if len(frame) < MIN_TEXTS:
        fail(f"only {len(frame)} texts can be scored; a calibration needs at least {MIN_TEXTS}")
    frame = frame.assign(split=split_texts(frame, heldout_frac, seed))
    rows = calibration_rows(frame, tables, spans, edges, k, seed)
    ident = model_identity(model, tok)
    settings = {"max_tokens": max_tokens, "min_k": k, "dtype": resolved_dtype(), "stride": stride,
                "length_edges": list(edges), "heldout_frac": heldout_frac, "seed": seed}
    rule = (f"a seeded random {heldout_frac:g} of the texts (seed {seed}) is held out to measure the "
            "false-positive rate; the rest sets the thresholds")
    cal = build_calibration(rows, ident, model_identity(ref_name, ref_tok) if ref_name else ident, settings,
                            corpus_identity(frame, corpus, rule))
    write_output(out, "--out", lambda tmp: save_calibration(cal, tmp))
    n_held = int((frame["split"] == "heldout").sum())
    typer.echo(f"{out}: {len(frame)} human texts ({len(frame) - n_held} calibrate, {n_held} held out) scored by "
               f"{model}, {len(rows)} rows in {len(edges) - 1} length bins up to {max_tokens} tokens")
    table = bin_thresholds(rows_frame(cal), edges, DEFAULT_DETECTOR, 0.05)
    for r in table.itertuples():
        if r.n_calibration:
            typer.echo(f"  {r.low:>4}-{r.high:<4} tokens: {DEFAULT_DETECTOR} threshold at 5% FPR {r.threshold:+.3f} "
                       f"({r.n_calibration} texts); held-out FPR {percent(r.fpr_heldout)} "
                       f"[{percent(r.fpr_low)}, {percent(r.fpr_high)}] of {r.n_heldout}")


ATTRIBUTION_CANDIDATES = "smollm2-135m,gemma-3-270m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b"


@app.command()
def attribute(
    inputs: list[str] = typer.Argument(..., help="text files, '-' (stdin), or literal texts in quotes"),
    candidates: str = typer.Option(ATTRIBUTION_CANDIDATES, help="comma-separated candidate models with "
                                   "their decoding warps: <model>[@t<T>][k<K>][p<P>]; default the four embedded "
                                   "models"),
    prompt_chars: int = typer.Option(0, help="the first N characters of each text are context, not scored"),
    batch_size: Optional[int] = typer.Option(None, help=BATCH_HELP),
) -> None:
    """Which candidate model (and decoding setting) wrote a text? Ranked by |z|, with confidences."""
    from ..analysis.attribution import attribute_many
    from ..engine.embedded import ModelLoadError
    from ..engine.score import ScoringError

    texts = read_texts(inputs)
    try:
        from ..core.sampling import parse_variants

        variants = parse_variants(candidates)
    except ValueError as err:
        fail(str(err))
    if len(variants) < 2:
        fail("--candidates needs at least two candidates")
    check_batch_size(batch_size)
    try:
        ranks = attribute_many([(text[prompt_chars:], text[:prompt_chars]) for _, text in texts], variants,
                               batch_size=batch_size)
    except (ModelLoadError, ScoringError) as err:
        fail(f"{texts[0][0] if len(texts) == 1 else 'scoring'}: {err}")
    for (label, _), ranked in zip(texts, ranks):
        best = ranked.iloc[0]
        typer.echo(f"{label}: most likely {best['candidate']} (confidence {best['confidence']:.2f}, z {best['z']:+.2f})")
        for r in ranked.itertuples():
            typer.echo(f"  {r.rank}. {r.candidate:<28} z {r.z:+8.2f}  confidence {r.confidence:.3f}  "
                       f"bits/byte {r.bpb:.3f}")
