"""Entropy rates of a model's own text: against human text, under adversarial prompts, per byte.

All quantities in bits (docs/science.md): the **entropy rate** of a run is its empirical entropy
``h = mean H_t`` (bits/token) under the distribution it was sampled from (``q``, the ``_samp``
columns); the **log-perplexity** of a text is ``l = mean s_t`` under a model's raw ``p``.

- **Calibration** (Braverman, Chen, Kakade, Narasimhan, Zhang, Zhang, "Calibration, Entropy Rates, and
  Memory in Language Models", ICML 2020, arXiv 1906.05664): a calibrated model's generations have an
  entropy rate equal to its log-perplexity on human text. ``generation_rates`` (per run),
  ``text_rates`` (per human text), ``calibration_gap`` (their difference with a bootstrap CI),
  ``ensure_temperature_sweep`` / ``temperature_curve`` / ``closing_temperature`` (the temperature where
  the gap closes), ``calibration_comparison`` (the paper's Table 1 beside the embedded models), ``running_means`` (``h_n`` along the generations). How ``H_t`` itself moves with the
  position is ``aep_lib.analysis.dynamics``' subject.
- **Adversarial prompts**: ``clt_share_bound`` (the share of runs within ±2σ that N(0, 1) guarantees
  with n runs), ``prompt_shares`` (shares per prompt), ``cross_view`` (one row per text: ``z`` under its
  own ``q`` and ``p`` and under the other models), ``label_prompts`` (baseline prompts pooled).
- **Refined typical set** (arXiv 2405.13798 v4 restricts the typical set to grammatical texts):
  ``byte_entropy`` (cumulative entropy against UTF-8 bytes along each run), ``at_byte_lengths``,
  ``relative_typical_set`` (log2 of one model's typical-set size over a second model's, per byte
  length, with CIs) and the ``ASSUMPTIONS`` the number rests on.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as st

from ..core import columns, inference
from ..core.sampling import Sampling
from ..engine.models import load_tokenizer
from ..runs.generations import ensure_generations, sampled_with
from ..store.run_store import RunStore
from . import tables
from .attribution import cut_positions

META = ["run_id", "model", "prompt_id", "seed", "temperature"]


def _ok(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "ok"] if "status" in runs else runs


# --- calibration: entropy rate of generations against log-perplexity on human text ---------------------


def generation_rates(store: RunStore, runs: pd.DataFrame, n: int | None = None, dist: str = "samp") -> pd.DataFrame:
    """One row per ok generation run: ``n_tokens`` and, over its first ``n`` tokens (all when ``None``),
    the entropy rate ``h = mean H_t`` and ``l = mean s_t`` (bits/token) under ``dist`` (``samp``: ``q``),
    with the run's ``model, prompt_id, seed, temperature``. Runs shorter than ``n`` keep what they have."""
    ok = _ok(runs)
    cols = list(columns.typicality_columns(dist)[:2])
    out_cols = [*META, "n_tokens", "h", "l"]
    if ok.empty:
        return pd.DataFrame(columns=out_cols)
    tok = store.tokens(ok["run_id"].tolist(), columns=["position", *cols])
    if n is not None:
        tok = tok[tok.groupby("run_id", sort=False).cumcount() < n]
    agg = tok.groupby("run_id", sort=False).agg(n_tokens=(cols[1], "size"), h=(cols[1], "mean"), l=(cols[0], "mean"))
    out = ok[[c for c in META if c in ok]].drop_duplicates("run_id").merge(agg.reset_index(), on="run_id")
    return out[[c for c in out_cols if c in out]]


def text_rates(store: RunStore, text_runs: pd.DataFrame) -> pd.DataFrame:
    """One row per ok external-text run (``comparisons.ensure_text_scores`` rows, every window pooled):
    ``model, text_id, group, n_tokens``, ``l`` (mean surprisal under the raw ``p``, bits/token: the
    log-perplexity) and ``h`` (mean entropy under ``p``)."""
    ok = _ok(text_runs)
    cols = ["model", "text_id", "group", "n_tokens", "l", "h"]
    if ok.empty:
        return pd.DataFrame(columns=cols)
    surprisal, entropy = columns.typicality_columns("raw")[:2]
    tok = store.tokens(ok["run_id"].tolist(), columns=[surprisal, entropy])
    agg = tok.groupby("run_id", sort=False).agg(n_tokens=(surprisal, "size"), l=(surprisal, "mean"),
                                                 h=(entropy, "mean")).reset_index()
    return ok[["run_id", "model", "text_id", "group"]].merge(agg, on="run_id")[cols]


def calibration_gap(gen: pd.DataFrame, human: pd.DataFrame, models=None, n_resamples: int = 2000) -> pd.DataFrame:
    """Per model: the entropy rate of its generations (``gen``: ``generation_rates`` rows, one value per
    run) against its log-perplexity on human text (``human``: ``text_rates`` rows, one per text).

    Columns ``model, n_runs, h_gen, h_low, h_high`` (mean over runs, 95% bootstrap CI), ``n_texts,
    l_human, l_low, l_high``, ``gap = h_gen - l_human`` with ``gap_low, gap_high`` (bootstrap over runs
    and texts independently, ``inference.compare_groups``) and ``ratio = h_gen / l_human``. A positive
    gap: the generations are more random than human text is to the model (Braverman et al.'s
    miscalibration)."""
    rows = []
    for model in (list(models) if models is not None else list(dict.fromkeys(gen["model"]))):
        h = gen.loc[gen["model"] == model, "h"].to_numpy(dtype=float)
        lh = human.loc[human["model"] == model, "l"].to_numpy(dtype=float)
        ci_h = inference.bootstrap_ci(h, n_resamples=n_resamples)
        ci_l = inference.bootstrap_ci(lh, n_resamples=n_resamples)
        diff = inference.compare_groups(h, lh, n_resamples=n_resamples)
        rows.append({"model": model, "n_runs": ci_h.n, "h_gen": ci_h.estimate, "h_low": ci_h.low, "h_high": ci_h.high,
                     "n_texts": ci_l.n, "l_human": ci_l.estimate, "l_low": ci_l.low, "l_high": ci_l.high,
                     "gap": ci_h.estimate - ci_l.estimate, "gap_low": diff["diff_low"], "gap_high": diff["diff_high"],
                     "ratio": ci_h.estimate / ci_l.estimate if ci_l.estimate else math.nan})
    return pd.DataFrame(rows, columns=["model", "n_runs", "h_gen", "h_low", "h_high", "n_texts", "l_human", "l_low",
                                       "l_high", "gap", "gap_low", "gap_high", "ratio"])


# Braverman et al., Table 1: (model, corpus, perplexity on the test text, exp of the entropy rate of the model's own
# long generations: the paper's "EntRate" column, in perplexity units like the first).
BRAVERMAN_TABLE1 = (("AWD-LSTM", "PTB", 58.3, 93.1), ("CNN-LSTM", "GBW", 29.8, 49.4),
                    ("Transformer", "GBW", 28.1, 34.7), ("GPT-2", "WebText", 23.7, 61.2))


def calibration_comparison(gap: pd.DataFrame, corpus: str = "shipped human texts") -> pd.DataFrame:
    """Braverman et al.'s Table 1 above the embedded models' ``calibration_gap`` rows, in both units: one row per
    model: ``source`` (``Braverman et al.`` or ``embedded``), ``model, corpus``, ``ppl_human`` (perplexity on human
    text, ``2^l``), ``ppl_generations`` (``2^h`` of the model's own generations) and ``gap_bits`` (``log2`` of
    their ratio, ``h - l`` in bits per token; per word for the paper's word-level corpora). Perplexities
    are base-free (``2^bits = e^nats``), so the paper's numbers convert without knowing its log base."""
    rows = [{"source": "Braverman et al.", "model": m, "corpus": c, "ppl_human": test, "ppl_generations": gen_,
             "gap_bits": math.log2(gen_ / test)} for m, c, test, gen_ in BRAVERMAN_TABLE1]
    rows += [{"source": "embedded", "model": r.model, "corpus": corpus, "ppl_human": 2.0 ** r.l_human,
              "ppl_generations": 2.0 ** r.h_gen, "gap_bits": r.gap} for r in gap.itertuples()]
    return pd.DataFrame(rows, columns=["source", "model", "corpus", "ppl_human", "ppl_generations", "gap_bits"])


def sign_verdict(low: float, high: float) -> str:
    """Whether a CI supports a claim that a quantity is positive: ``holds`` (CI above 0), ``reversed`` (below 0),
    ``not shown`` (it holds 0), ``undetermined`` (NaN bounds)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "undetermined"
    return "holds" if low > 0 else "reversed" if high < 0 else "not shown"


def temperature_curve(gen: pd.DataFrame, n_resamples: int = 2000) -> pd.DataFrame:
    """Per model and temperature (ascending): ``n_runs`` and the mean entropy rate ``h`` of the
    generations with its 95% bootstrap CI ``low, high`` (bits/token)."""
    rows = []
    for (model, t), g in gen.sort_values("temperature").groupby(["model", "temperature"], sort=False):
        ci = inference.bootstrap_ci(g["h"], n_resamples=n_resamples)
        rows.append({"model": model, "temperature": float(t), "n_runs": ci.n, "h": ci.estimate, "low": ci.low,
                     "high": ci.high})
    out = pd.DataFrame(rows, columns=["model", "temperature", "n_runs", "h", "low", "high"])
    order = {m: i for i, m in enumerate(dict.fromkeys(gen["model"]))}
    return out.sort_values(["model", "temperature"], key=lambda c: c.map(order) if c.name == "model" else c,
                           kind="stable").reset_index(drop=True)


def crossing(x, y, target: float) -> float:
    """The first ``x`` where the piecewise-linear curve through ``(x, y)`` (``x`` ascending) reaches
    ``target``; NaN when it never does within ``[x[0], x[-1]]`` (no extrapolation)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float) - target
    for i in range(len(x)):
        if y[i] == 0:
            return float(x[i])
        if i + 1 < len(x) and y[i] * y[i + 1] < 0:
            return float(x[i] + (x[i + 1] - x[i]) * (-y[i]) / (y[i + 1] - y[i]))
    return math.nan


def closing_temperature(gen: pd.DataFrame, human: pd.DataFrame, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per model: the sampling temperature at which the mean entropy rate of the generations equals the
    mean log-perplexity on human text (linear interpolation between the temperatures of ``gen``).

    ``gen``: ``generation_rates`` rows of several temperatures; ``human``: ``text_rates`` rows. Columns
    ``model, temperature`` (NaN when the curve does not reach ``l_human`` within the sweep),
    ``low, high`` (2.5% and 97.5% quantiles over bootstrap resamples of the runs of each temperature and
    of the texts, among the resamples where it is defined), ``share_defined`` (their share) and
    ``where``: ``inside``, or ``below`` / ``above`` the sweep (every temperature's entropy rate above /
    below ``l_human``: the closing temperature lies lower / higher)."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, g in gen.groupby("model", sort=False):
        temps = sorted(g["temperature"].unique())
        values = [g.loc[g["temperature"] == t, "h"].to_numpy(dtype=float) for t in temps]
        lh = human.loc[human["model"] == model, "l"].to_numpy(dtype=float)
        means = [v.mean() for v in values]
        target = float(lh.mean()) if len(lh) else math.nan
        est = crossing(temps, means, target)
        boot_means = np.stack([v[rng.integers(0, len(v), (n_resamples, len(v)))].mean(1) for v in values], axis=1)
        boot_target = lh[rng.integers(0, len(lh), (n_resamples, len(lh)))].mean(1) if len(lh) else np.full(n_resamples, np.nan)
        boot = np.array([crossing(temps, m, t) for m, t in zip(boot_means, boot_target)])
        ok = boot[np.isfinite(boot)]
        where = "inside" if np.isfinite(est) else ("below" if min(means) > target else "above")
        rows.append({"model": model, "temperature": est, "low": float(np.quantile(ok, 0.025)) if len(ok) else math.nan,
                     "high": float(np.quantile(ok, 0.975)) if len(ok) else math.nan,
                     "share_defined": len(ok) / n_resamples, "where": where})
    return pd.DataFrame(rows, columns=["model", "temperature", "low", "high", "share_defined", "where"])


def running_means(running: pd.DataFrame, column: str, by: str = "model") -> pd.DataFrame:
    """Per ``by`` group and length ``n`` of a running table (``tables.running_table`` rows): ``n_runs``, the
    mean of ``column`` over runs and ``half_width``, the half-width of its normal 95% interval
    (1.96 sd / sqrt(runs), ddof 1; NaN for one run)."""
    g = running.groupby([by, "n"], sort=False)[column].agg(["mean", "std", "size"]).reset_index()
    g["half_width"] = 1.96 * g["std"] / np.sqrt(g["size"])
    return g.rename(columns={"size": "n_runs"})[[by, "n", "n_runs", "mean", "half_width"]]


def ensure_temperature_sweep(store: RunStore, models, prompt_ids, seeds, temperatures, max_new_tokens: int,
                             grid_runs: pd.DataFrame | None = None, batch_size: int = 8, device: str = "auto",
                             dtype: str = "auto") -> pd.DataFrame:
    """Generations of ``models × prompt_ids × seeds`` at each sampling temperature (no truncation,
    end-of-text suppressed), ``max_new_tokens`` each; their run rows with a ``temperature`` column.

    Temperature 1 is taken from ``grid_runs`` when given (the self grid's untruncated runs of those
    models, prompts and seeds, at least ``max_new_tokens`` long: cut them with ``generation_rates(...,
    n=max_new_tokens)``), since a run's first tokens do not depend on how long it goes on. The other
    temperatures' runs share batches."""
    swept = [Sampling(temperature=t) for t in temperatures if not (t == 1.0 and grid_runs is not None)]
    generated = ensure_generations(store, list(models), list(prompt_ids), list(seeds), swept, max_new_tokens,
                                   batch_size=batch_size, device=device, dtype=dtype, progress=False) if swept else None
    frames = []
    for t in temperatures:
        if t == 1.0 and grid_runs is not None:
            g = grid_runs[grid_runs["model"].isin(models) & grid_runs["prompt_id"].isin(prompt_ids)
                          & grid_runs["seed"].isin(seeds) & (grid_runs["top_p"] == 1.0) & (grid_runs["temperature"] == 1.0)]
            if (g["max_new_tokens"] < max_new_tokens).any() or len(g) != len(models) * len(prompt_ids) * len(seeds):
                raise ValueError(f"the grid's temperature-1 runs do not cover {len(models)} models x "
                                 f"{len(prompt_ids)} prompts x {len(seeds)} seeds of {max_new_tokens} tokens")
            frames.append(g)
            continue
        frames.append(generated[sampled_with(generated, Sampling(temperature=t))])
    runs = pd.concat(frames, ignore_index=True)
    bad = runs[runs["status"] != "ok"]
    if len(bad):
        raise RuntimeError(f"{len(bad)} run(s) of the temperature sweep failed; first error: {bad['error'].iloc[0]}")
    return runs


# --- adversarial prompts: the AEP under any prompt, and what a prompt does to the other models' view -------


def clt_share_bound(n: int, bound: float = 2.0, alpha: float = 0.01) -> float:
    """The share of ``n`` independent N(0, 1) values within ``±bound`` that is reached with probability
    at least ``1 - alpha``: ``k / n`` for the ``alpha`` quantile ``k`` of Binomial(n, P(|Z| <= bound)).
    (``n = 8`` at ±2, ``alpha = 0.01``: 6/8 = 0.75; the expected share is 0.954.)"""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    p = 2 * st.norm.cdf(bound) - 1
    return float(st.binom.ppf(alpha, n, p)) / n


def prompt_shares(finals: pd.DataFrame, by=("prompt_id",), bound: float = 2.0, alpha: float = 0.01) -> pd.DataFrame:
    """Per group of ``finals`` (``tables.run_summaries`` rows of one distribution): ``tables.share_table``'s
    ``n_runs, share_z1, share_z2, mean_z, mean_D``, the mean share of positions within ±2σ
    (``share_positions``, the runs' ``frac_within_2sigma``) and ``expected_at_least``: the share of
    runs within ±``bound`` that N(0, 1) reaches with probability ``1 - alpha`` (``clt_share_bound``)."""
    by = list(by)
    shares = tables.share_table(finals, by=by)
    positions = finals.groupby(by, sort=False)["frac_within_2sigma"].mean().rename("share_positions").reset_index()
    out = shares.merge(positions, on=by, how="left")
    out["expected_at_least"] = [clt_share_bound(int(n), bound, alpha) for n in out["n_runs"]]
    return out


def cross_view(sources: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """One row per ok source generation (``sources``: generation run rows with ``z_samp``, ``z_raw``):
    ``run_id, model, prompt_id, seed``, ``z_own_q`` / ``z_own_p`` (final ``z`` under its own ``q`` and
    raw ``p``), and from the comparison records of other scorers (``records``: ``ensure_comparisons``
    rows; self pairs ignored; the mean over scorers when several) ``z_other_q`` (under the scorer's
    ``q``), ``z_other_p`` (under its raw ``p``) and ``bpb_gap`` (the scorer's bits per byte minus the
    source model's, on the same characters)."""
    src = _ok(sources)
    out = src[["run_id", "model", "prompt_id", "seed"]].assign(z_own_q=src["z_samp"].to_numpy(dtype=float),
                                                              z_own_p=src["z_raw"].to_numpy(dtype=float))
    rec = _ok(records)
    rec = rec[~rec["self_pair"].astype(bool)].assign(bpb_gap=lambda d: d["bpb_scorer"] - d["bpb_source"])
    other = rec.groupby("source_run_id")[["z_samp", "z_raw", "bpb_gap"]].mean()
    out["z_other_q"] = out["run_id"].map(other["z_samp"])
    out["z_other_p"] = out["run_id"].map(other["z_raw"])
    out["bpb_gap"] = out["run_id"].map(other["bpb_gap"])
    return out.reset_index(drop=True)


def label_prompts(df: pd.DataFrame, runs: pd.DataFrame, baseline, label: str = "baseline") -> pd.DataFrame:
    """A copy of ``df`` (rows with a ``run_id``) with the run's ``prompt_id`` (when missing) and
    ``prompt_group``: ``label`` for a prompt of ``baseline`` (pooled), else the prompt id itself."""
    out = df if "prompt_id" in df else df.merge(runs[["run_id", "prompt_id"]], on="run_id", how="left")
    base = set(baseline)
    return out.assign(prompt_group=out["prompt_id"].map(lambda p: label if p in base else p))


# --- the refined typical set: one model's typical set against the texts a second model finds typical -----

ASSUMPTIONS = (
    ("AEP: a model's samples of N bytes lie, with high probability, in a typical set of about 2^(N h) texts, "
     "h its entropy rate in bits per byte (to first order in N: the ±eps band and sub-exponential factors dropped)"),
    ("'plausible' text of N bytes = the typical set of the second model B, a stand-in for grammatical text "
     "(arXiv 2405.13798 v4 restricts the typical set to grammatical texts): log2 |plausible_N| = N h_B"),
    ("per byte, not per token: the two models tokenize differently (no shared vocabulary), so a text's token "
     "counts differ; h per byte = sum of H_t over a run / UTF-8 bytes of its text up to there"),
    ("entropy rates of each model's own generations at temperature 1 (q = p, up to the suppressed end-of-text "
     "token), continuing the grid's prompts: typical sets of continuations of these prompts, not of all text"),
    ("a ratio of counts, not a containment: when N (h_A - h_B) > 0, at most a 2^(-N (h_A - h_B)) share of A's "
     "typical set can lie among B's plausible texts"),
    "h per byte still drifts with N at these lengths: each N uses the runs' entropy per byte at that N",
)


def byte_entropy(store: RunStore, runs: pd.DataFrame, points: int = 48, dist: str = "samp") -> pd.DataFrame:
    """Cumulative entropy against UTF-8 bytes along each ok generation run, at about ``points`` token
    lengths ``n`` evenly spaced up to its length (and at its end).

    The bytes of the first ``n`` tokens are those of the decoded prefix (``attribution.cut_positions``
    with the run's own tokenizer; a length whose prefix ends inside a character is left out). One row
    per (run, n): ``run_id, model, n, n_bytes, bits`` (sum of ``H_t``), ``h_token = bits / n`` (bits/token)
    and ``h_byte = bits / n_bytes`` (bits/byte)."""
    ok = _ok(runs)
    cols = ["run_id", "model", "n", "n_bytes", "bits", "h_token", "h_byte"]
    if ok.empty:
        return pd.DataFrame(columns=cols)
    entropy = columns.column("entropy", dist)
    tok = store.tokens(ok["run_id"].tolist(), columns=["position", "token_id", entropy])
    frames = []
    for rid, g in tok.groupby("run_id", sort=False):
        run = ok[ok["run_id"] == rid].iloc[0]
        text = str(run["text"])
        grid = np.unique(np.linspace(1, len(g), min(points, len(g))).round().astype(int))
        cuts = cut_positions(load_tokenizer(str(run["model"])), g["token_id"].tolist(), text, grid.tolist())
        if not cuts:
            continue
        n = np.array(list(cuts), dtype=np.int64)
        n_bytes = np.array([len(text[:c].encode("utf-8")) for c in cuts.values()], dtype=np.int64)
        bits = np.cumsum(g[entropy].to_numpy(dtype=float))[n - 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            h_byte = np.where(n_bytes > 0, bits / np.maximum(n_bytes, 1), np.nan)
        frames.append(pd.DataFrame({"run_id": rid, "model": run["model"], "n": n, "n_bytes": n_bytes, "bits": bits,
                                    "h_token": bits / n, "h_byte": h_byte}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def at_byte_lengths(curves: pd.DataFrame, lengths) -> pd.DataFrame:
    """Each run's entropy per byte at common byte lengths ``N`` (``lengths``), from ``byte_entropy`` rows:
    the cumulative ``bits`` interpolated linearly in bytes, ``h_byte = bits(N) / N``. A run contributes
    only the ``N`` within its measured byte range. Columns ``run_id, model, N, h_byte``."""
    lengths = np.asarray(lengths, dtype=float)
    frames = []
    for rid, g in curves.sort_values(["run_id", "n_bytes"]).groupby("run_id", sort=False):
        x, y = g["n_bytes"].to_numpy(dtype=float), g["bits"].to_numpy(dtype=float)
        keep = lengths[(lengths >= x[0]) & (lengths <= x[-1])]
        frames.append(pd.DataFrame({"run_id": rid, "model": g["model"].iloc[0], "N": keep.astype(np.int64),
                                    "h_byte": np.interp(keep, x, y) / keep}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id", "model", "N", "h_byte"])


def common_byte_lengths(curves: pd.DataFrame, points: int = 24) -> np.ndarray:
    """About ``points`` byte lengths evenly spaced from the shortest first measured prefix to the
    shortest run's full length in bytes, so that every run of every model reaches each of them."""
    ends = curves.groupby("run_id")["n_bytes"]
    lo, hi = int(ends.min().max()), int(ends.max().min())
    return np.unique(np.linspace(lo, hi, points).round().astype(np.int64)) if hi >= lo else np.array([], dtype=np.int64)


def relative_typical_set(per_run: pd.DataFrame, pairs, n_resamples: int = 2000) -> pd.DataFrame:
    """log2 of the size of model A's typical set relative to the texts model B finds typical of itself, per
    byte length ``N``: ``N (h_A - h_B)`` (``ASSUMPTIONS``).

    ``per_run``: ``at_byte_lengths`` rows; ``pairs``: ``(A, B)`` model names. One row per (pair, N):
    ``model, other, N, n_runs, n_runs_other``, ``h_byte`` / ``h_byte_other`` (means over runs, bits/byte),
    ``log2_typical = N h_A``, ``log2_plausible = N h_B``, ``log2_relative = N (h_A - h_B)`` with
    ``low, high`` = ``N`` times the 95% bootstrap CI of the difference of the mean entropies per byte
    (runs of A and of B resampled independently, ``inference.compare_groups``)."""
    rows = []
    for a, b in pairs:
        for big_n, g in per_run[per_run["model"].isin([a, b])].groupby("N", sort=True):
            ha = g.loc[g["model"] == a, "h_byte"].to_numpy(dtype=float)
            hb = g.loc[g["model"] == b, "h_byte"].to_numpy(dtype=float)
            d = inference.compare_groups(ha, hb, n_resamples=n_resamples)
            rows.append({"model": a, "other": b, "N": int(big_n), "n_runs": d["n_a"], "n_runs_other": d["n_b"],
                         "h_byte": d["mean_a"], "h_byte_other": d["mean_b"], "log2_typical": big_n * d["mean_a"],
                         "log2_plausible": big_n * d["mean_b"], "log2_relative": big_n * (d["mean_a"] - d["mean_b"]),
                         "low": big_n * d["diff_low"], "high": big_n * d["diff_high"]})
    return pd.DataFrame(rows, columns=["model", "other", "N", "n_runs", "n_runs_other", "h_byte", "h_byte_other",
                                       "log2_typical", "log2_plausible", "log2_relative", "low", "high"])
