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
    params_file: Path = typer.Argument(..., help="a grid YAML: models, prompts, n_seeds, warps, lengths, ..."),
    profile: str = typer.Option("cpu", help="store under outputs/<profile>/store"),
    executor: str = typer.Option("local", help="local (this process) | ray (one Ray task per model-batch)"),
    address: Optional[str] = typer.Option(None, help="ray: the cluster (host:6379, ray://host:10001, auto); "
                                          "default: start a local Ray instance"),
    store: Optional[Path] = typer.Option(None, help="the store folder (default outputs/<profile>/store); with "
                                         "--address, a path every Ray worker can reach"),
    num_cpus: Optional[int] = typer.Option(None, help="ray without --address: CPUs of the local instance"),
    max_retries: int = typer.Option(3, help="ray: re-runs of a task whose worker died"),
    gpus_per_task: float = typer.Option(1, help="ray: GPUs per task when the cluster has GPUs"),
) -> None:
    """Expand a grid (models × prompts × seeds × warps × lengths) into generation runs; skip stored ones;
    run the rest batched per model, here or on Ray."""
    from .params import ParamsError, load_grid
    from .paths import store_dir
    from .grids import ensure_grid
    from .store import RunStore

    try:
        grid = load_grid(params_file)
    except ParamsError as err:
        _fail(str(err))
    if executor not in ("local", "ray"):
        _fail(f"unknown executor {executor!r}; available: local, ray")
    if executor == "local" and address:
        _fail("--address needs --executor ray")
    run_store = RunStore(store if store is not None else store_dir(profile))
    options = dict(num_cpus=num_cpus, max_retries=max_retries, gpus_per_task=gpus_per_task) if executor == "ray" else {}
    try:
        runs = ensure_grid(run_store, grid, executor=executor, address=address, **options)
    except (ImportError, RuntimeError) as err:  # ray missing; Ray tasks that failed for good
        _fail(str(err))
    counts = runs["status"].value_counts().to_dict() if len(runs) else {}
    expected = len(grid.models) * len(grid.prompts) * len(grid.seeds) * len(grid.samplings) * len(grid.all_lengths)
    typer.echo(f"{len(runs)} of {expected} runs of the grid stored: {counts}; store: {run_store.root}")
    if counts.get("failed") or len(runs) < expected:
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


@app.command()
def bench(
    target: Optional[list[str]] = typer.Option(None, help="generation | memory | scoring | pair | startup | store | "
                                               "gpu; repeatable (default: all)"),
    repeats: int = typer.Option(3, min=1, help="timed repeats per target (medians are reported)"),
    quick: bool = typer.Option(False, help="tiny sizes: a smoke test of the benchmark code, not a measurement"),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads (default one per core; 1 is steadier "
                                          "on a machine that other work also loads)"),
) -> None:
    """Measure the performance targets against their baselines in this process; print ratios and verdicts."""
    from .bench import TARGETS, run_bench

    unknown = [t for t in target or [] if t not in TARGETS]
    if unknown:
        _fail(f"unknown bench target(s) {unknown}; known: {', '.join(TARGETS)}")
    results = run_bench(target or None, repeats=repeats, quick=quick, echo=typer.echo, threads=threads)
    if not quick and any(r.holds is False for r in results):
        raise typer.Exit(1)


@app.command()
def compare(
    profile: str = typer.Option("cpu", help="which profile's store: outputs/<profile>/store"),
    pair: Optional[str] = typer.Option(None, help="only this pair, e.g. 'smollm2-135m -> gemma-3-270m'"),
) -> None:
    """Aggregate every cross-model comparison in the store: usable / skipped / failed, h^(A,B), l^B - h^B."""
    from .comparison_tables import compare as compare_records
    from .report import format_report
    from .paths import store_dir
    from .store import RunStore

    store = RunStore(store_dir(profile))
    records = compare_records(store)
    if pair is not None:
        records = records[records["pair"] == pair]
    if records.empty:
        typer.echo(f"no comparison records in {store.root}" + (f" for pair {pair!r}" if pair else ""))
        return
    typer.echo(format_report(records))


def _looks_like_path(arg: str) -> bool:
    """An argument meant as a file name: one word with a folder separator or a short extension."""
    import re

    return not re.search(r"\s", arg) and bool(re.search(r"[/\\]|\.[A-Za-z0-9]{1,5}$", arg))


def _read_detect_inputs(inputs: list[str]) -> list[tuple[str, str]]:
    """``[(label, text)]``: each argument is a file (read), ``-`` (stdin) or a literal text."""
    out = []
    for arg in inputs:
        if arg == "-":
            out.append(("<stdin>", sys.stdin.read()))
        elif Path(arg).is_file():
            try:
                out.append((arg, Path(arg).read_text(encoding="utf-8")))
            except UnicodeDecodeError:
                _fail(f"{arg}: not a UTF-8 text file")
        elif Path(arg).exists():
            _fail(f"{arg}: not a regular file")
        elif _looks_like_path(arg):
            _fail(f"{arg}: no such file (pass the text itself in quotes to score a literal text)")
        else:
            out.append((f"<text {len(out) + 1}>", arg))
    return out


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

    from .detect import DETECTORS, detector_scores, score_prepared, verdict
    from .embedded import EMBEDDED_MODELS, ModelLoadError
    from .models import load_model
    from .score import ScoringError, check_same_vocabulary, tokenize_span

    if not 0 < alpha < 1:
        _fail(f"--alpha must be in (0, 1), got {alpha}")
    if not 0 < k <= 1:
        _fail(f"--k must be in (0, 1], got {k}")
    if tokens_out is not None and tokens_out.suffix not in (".csv", ".parquet"):
        _fail(f"--tokens-out {tokens_out}: the file name must end in .csv or .parquet")
    texts = _read_detect_inputs(inputs)
    ref_name = reference if reference not in (None, "", model) else None
    if ref_name and model in EMBEDDED_MODELS and ref_name in EMBEDDED_MODELS:
        va, vb = EMBEDDED_MODELS[model].vocab_size, EMBEDDED_MODELS[ref_name].vocab_size
        if va != vb:  # known before loading any weights
            _fail(f"vocabulary mismatch: {model} has {va} tokens, {ref_name} {vb}; the cross criteria need one "
                  "shared vocabulary (leave --reference out for the white-box criteria)")
    try:
        mdl, tok = load_model(model)
        ref, ref_tok = load_model(ref_name) if ref_name else (None, None)
        if ref_name:
            check_same_vocabulary(mdl, ref, tok, ref_tok)
    except ModelLoadError as err:
        _fail(str(err))
    except ScoringError as err:
        _fail(f"{err} (leave --reference out for the white-box criteria)")
    tables = []
    for i, (label, text) in enumerate(texts):
        try:
            prep = tokenize_span(tok, text[prompt_chars:], text[:prompt_chars], max_tokens or None)
            t = score_prepared(mdl, tok, prep, reference=ref)
        except ScoringError as err:
            _fail(f"{label}: {err}")
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
    from .attribution import attribute as rank
    from .embedded import ModelLoadError
    from .score import ScoringError

    texts = _read_detect_inputs(inputs)
    try:
        from .sampling import parse_variants

        variants = parse_variants(candidates)
    except ValueError as err:
        _fail(str(err))
    if len(variants) < 2:
        _fail("--candidates needs at least two candidates")
    for label, text in texts:
        try:
            ranked = rank(text[prompt_chars:], variants, prompt=text[:prompt_chars])
        except (ModelLoadError, ScoringError) as err:
            _fail(f"{label}: {err}")
        best = ranked.iloc[0]
        typer.echo(f"{label}: most likely {best['candidate']} (confidence {best['confidence']:.2f}, z {best['z']:+.2f})")
        for r in ranked.itertuples():
            typer.echo(f"  {r.rank}. {r.candidate:<28} z {r.z:+8.2f}  confidence {r.confidence:.3f}  "
                       f"bits/byte {r.bpb:.3f}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
