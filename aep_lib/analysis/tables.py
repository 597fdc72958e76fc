"""Store -> tidy tables of self-generated runs (docs/science.md names: ``l, h, D, sigma, z`` final values,
``l_n, h_n, D_n, sigma_n, z_n`` running values, all bits).

Every self-convergence notebook draws on the same generation grid, so its runs are generated once
and reused (``ensure_self_grid``):

- the **main** setting: temperature 1, no truncation (``q = p``, up to the suppressed end-of-text
  token, a warp of its own: docs/science.md), ``models × prompts × n_seeds``;
- the **truncated** contrast: the same models and prompts at ``top_p < 1`` (``q != p``),
  ``n_seeds_truncated`` seeds each. Under its ``q`` the text is typical; under the raw ``p`` it is
  over-typical (``l_n`` below ``h_n``, ``z_n`` large and negative): docs/science.md.

Tables: one row per run and distribution (``run_summaries``, ``final_table``), per run and position
(``running_stats``, ``running_table``), and the summaries the figures draw (shares within ±kσ, length
scaling, the size of the typical set).

Decoding settings (the sampling-sensitivity notebook): one row per generation of a sweep over
temperature, top-p and top-k (``decoding_table``), means with bootstrap CIs per group
(``group_cis``), the share of texts whose z-test rejects the AEP (``z_test_shares``) and each
setting's shift against a baseline setting (``shift_tests``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..core import inference
from ..core.columns import DISTRIBUTIONS, typicality_columns
from ..core.sampling import Sampling
from ..core.stats import running, summarize
from ..runs.generations import ensure_samplings, sampled_with
from ..store.run_store import RunStore


def run_summaries(store: RunStore, runs: pd.DataFrame, burn_in: int = 0) -> pd.DataFrame:
    """One row per (run, distribution): final ``l, h, D, sigma, z`` and the shares of positions
    (after ``burn_in``) within ±1σ and ±2σ, joined to the run's model, prompt and seed."""
    rows = []
    keep = [c for c in ("run_id", "model", "prompt_id", "seed", "temperature", "top_k", "top_p") if c in runs]
    tokens = store.tokens(runs["run_id"].tolist()) if len(runs) else pd.DataFrame()
    for run_id, group in tokens.groupby("run_id", sort=False):
        meta = runs.loc[runs["run_id"] == run_id, keep].iloc[0].to_dict()
        for dist in DISTRIBUTIONS:
            cols = typicality_columns(dist)
            if all(c in group for c in cols):
                rows.append(meta | {"dist": dist} | summarize(*(group[c].to_numpy() for c in cols), burn_in=burn_in))
    return pd.DataFrame(rows)


def running_stats(store: RunStore, run_ids, dist: str = "samp") -> pd.DataFrame:
    """Long table of running ``l_n, h_n, D_n, sigma_n, z_n`` per run (``dist``: 'samp' or 'raw')."""
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"dist must be one of {DISTRIBUTIONS}, got {dist!r}")
    cols = typicality_columns(dist)
    tokens = store.tokens(list(run_ids), columns=["run_id", "position", *cols])
    frames = []
    for run_id, group in tokens.groupby("run_id", sort=False):
        r = running(*(group[c].to_numpy() for c in cols))
        frames.append(pd.DataFrame({"run_id": run_id, **r}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["run_id", "n", "l_n", "h_n", "D_n", "sigma_n", "z_n"])


MAIN = "main"  # setting label of the untruncated grid (q = p)


TRUNCATED = "truncated"  # setting label of the top-p contrast (q != p)


def grid_settings(top_p: float, temperature: float = 1.0) -> dict[str, Sampling]:
    """The two sampling settings of the grid: ``main`` (no truncation) and ``truncated`` (top-p)."""
    return {MAIN: Sampling(temperature=temperature),
            TRUNCATED: Sampling(temperature=temperature, top_p=top_p)}


def ensure_self_grid(store: RunStore, P, progress: bool = False) -> pd.DataFrame:
    """Generate what is missing of the grid described by notebook params ``P``; return its run rows.

    ``P`` needs ``models, prompts, n_seeds, n_seeds_truncated, top_p, max_new_tokens, batch_size,
    device, dtype``. The rows carry a ``setting`` column (``main`` or ``truncated``); a setting with
    0 seeds is skipped. Failed runs raise: a figure drawn from part of its grid would mislead.
    """
    frames = []
    seeds = {setting: list(range(P.n_seeds if setting == MAIN else P.n_seeds_truncated))
             for setting in grid_settings(P.top_p)}
    settings = {setting: w for setting, w in grid_settings(P.top_p).items() if seeds[setting]}
    seeds_by_sampling: dict[Sampling, list[int]] = {}
    for setting, sampling in settings.items():  # both settings' runs planned at once: they share batches
        seeds_by_sampling[sampling] = sorted(set(seeds_by_sampling.get(sampling, [])) | set(seeds[setting]))
    runs = ensure_samplings(store, P.models, P.prompts, seeds_by_sampling, P.max_new_tokens,
                            batch_size=P.batch_size, device=P.device, dtype=P.dtype, progress=progress)
    for setting, sampling in settings.items():
        frames.append(runs[sampled_with(runs, sampling) & runs["seed"].isin(seeds[setting])].assign(setting=setting))
    runs = pd.concat(frames, ignore_index=True)
    bad = runs[runs["status"] != "ok"]
    if len(bad):
        raise RuntimeError(f"{len(bad)} run(s) of the grid failed; first error: {bad['error'].iloc[0]}")
    expected = sum(len(P.models) * len(P.prompts) * n for n in (P.n_seeds, P.n_seeds_truncated))
    if len(runs) != expected:
        raise RuntimeError(f"the grid has {len(runs)} runs, expected {expected}")
    order = {m: i for i, m in enumerate(P.models)}
    runs = runs.assign(_m=runs["model"].map(order)).sort_values(["_m", "setting", "prompt_id", "seed"])
    return runs.drop(columns="_m").reset_index(drop=True)


def describe_grid(runs: pd.DataFrame) -> str:
    """One line: how many runs of which models, prompts, seeds and lengths the grid holds."""
    parts = []
    for setting, g in runs.groupby("setting", sort=False):
        warp = "q = p" if setting == MAIN else f"top-p {g['top_p'].iloc[0]:g}"
        parts.append(f"{setting} ({warp}): {len(g)} runs = {g['model'].nunique()} models x "
                     f"{g['prompt_id'].nunique()} prompts x {g['seed'].nunique()} seeds")
    lengths = sorted(set(int(n) for n in runs["max_new_tokens"]))
    return "; ".join(parts) + f"; {', '.join(map(str, lengths))} tokens each"


def final_table(store: RunStore, runs: pd.DataFrame, burn_in: int = 0) -> pd.DataFrame:
    """One row per (run, dist): final ``l, h, D, sigma, z`` and shares within ±1σ/±2σ, with ``setting``."""
    out = run_summaries(store, runs, burn_in=burn_in)
    return out.merge(runs[["run_id", "setting"]], on="run_id", how="left")


def running_table(store: RunStore, runs: pd.DataFrame, dist: str = "samp") -> pd.DataFrame:
    """Running ``l_n, h_n, D_n, sigma_n, z_n`` of ``runs`` with their ``model, prompt_id, seed, setting``."""
    out = running_stats(store, runs["run_id"].tolist(), dist=dist)
    meta = runs[["run_id", "model", "prompt_id", "seed", "setting"]]
    return out.merge(meta, on="run_id", how="left").assign(dist=dist)


def share_table(finals: pd.DataFrame, by=("model", "setting", "dist")) -> pd.DataFrame:
    """Per group: ``n_runs``, share of runs with final ``|z| <= 1`` and ``<= 2``, mean ``z`` and ``D``.

    NaN ``z`` (undefined, see docs/science.md) count as runs but never as within a bound.
    """
    by = list(by)

    def shares(g: pd.DataFrame) -> pd.Series:
        z = g["z"].to_numpy(dtype=float)
        within = np.abs(np.nan_to_num(z, nan=np.inf))
        return pd.Series({"n_runs": len(g), "share_z1": float(np.mean(within <= 1)),
                          "share_z2": float(np.mean(within <= 2)), "mean_z": float(np.nanmean(z)) if len(g) else np.nan,
                          "mean_D": float(g["D"].mean())})

    rows = [dict(zip(by, key if isinstance(key, tuple) else (key,))) | shares(g).to_dict()
            for key, g in finals.groupby(by, sort=False)]
    out = pd.DataFrame(rows)
    if len(out):
        out["n_runs"] = out["n_runs"].astype(int)
    return out


def pooled_z(finals: pd.DataFrame, runs: pd.DataFrame) -> float:
    """The ``z`` of the runs of ``finals`` (one row per run, final ``D`` and ``sigma``) read as one sample:
    their summed ``l - h`` over the root of their summed varentropies, ``sum n_i D_i / sqrt(sum (n_i sigma_i)^2)``
    (``n_i``: the run's tokens, ``runs``' ``n_tokens``). Where each run's ``z`` is N(0, 1), so is this one; a
    drift shows in it with the power of all the runs' tokens, where the share of a few short runs beyond ±2
    is decided by one draw. NaN when the runs have no varentropy."""
    n = finals["run_id"].map(runs.set_index("run_id")["n_tokens"]).to_numpy(dtype=float)
    d, sigma = finals["D"].to_numpy(dtype=float), finals["sigma"].to_numpy(dtype=float)
    sd = math.sqrt(float(np.sum((n * sigma) ** 2)))
    return float(np.sum(n * d) / sd) if sd > 0 else float("nan")


def log_grid(n_max: int, points: int = 40, n_min: int = 1) -> np.ndarray:
    """About ``points`` distinct integers from ``n_min`` to ``n_max``, evenly spaced on a log axis."""
    if n_max < n_min:
        return np.array([], dtype=np.int64)
    grid = np.unique(np.round(np.geomspace(n_min, n_max, points)).astype(np.int64))
    return grid


def length_scaling(running: pd.DataFrame, ns=None, group: str | list[str] | None = "prompt_id") -> pd.DataFrame:
    """How the running statistics of many runs behave against length ``n``.

    ``running``: columns ``run_id, n, l_n, D_n, sigma_n, z_n`` (and ``group`` if given); runs shorter
    than some ``n`` simply drop out there. ``ns``: the lengths to tabulate (default every ``n``).
    Returns one row per ``n``:

    - ``n_runs``; ``share_z1`` / ``share_z2``: share of runs with ``|z_n| <= 1`` / ``<= 2`` (NaN z: outside);
    - ``var_l``: variance (ddof 1) of ``l_n`` across runs, pooled within ``group`` (a column or list of
      columns: runs of different prompts converge to different entropy rates, a spread that does not
      shrink with ``n``; the pooled variance is ``sum of squared deviations from the group means /
      (runs - groups)``); ``None``: across all runs;
    - ``var_D``: variance (ddof 1) of ``D_n`` across all runs; ``mean_sigma2``: mean of ``sigma_n²``,
      what the martingale CLT predicts ``var_D`` to be (both about ``const / n``).
    """
    df = running if ns is None else running[running["n"].isin(np.asarray(ns))]
    rows = []
    for n, g in df.groupby("n", sort=True):
        z = np.abs(np.nan_to_num(g["z_n"].to_numpy(dtype=float), nan=np.inf))
        if group is None:
            var_l = g["l_n"].var(ddof=1)
        else:
            keys = [group] if isinstance(group, str) else list(group)
            dev = g["l_n"] - g.groupby(keys)["l_n"].transform("mean")
            dof = len(g) - g.groupby(keys).ngroups
            var_l = float((dev**2).sum() / dof) if dof > 0 else np.nan
        rows.append({"n": int(n), "n_runs": len(g), "share_z1": float(np.mean(z <= 1)),
                     "share_z2": float(np.mean(z <= 2)), "var_l": float(var_l),
                     "var_D": float(g["D_n"].var(ddof=1)) if len(g) > 1 else np.nan,
                     "mean_sigma2": float(np.mean(g["sigma_n"].to_numpy(dtype=float) ** 2))})
    return pd.DataFrame(rows, columns=["n", "n_runs", "share_z1", "share_z2", "var_l", "var_D", "mean_sigma2"])


def loglog_slope(x, y) -> float:
    """Least-squares slope of ``log y`` against ``log x`` over the finite, positive pairs (NaN if < 2)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def inverse_n_reference(n, y, anchor: str = "last") -> np.ndarray:
    """``c / n`` through the point of ``(n, y)`` at its ``anchor`` (``last`` or ``first`` finite point)."""
    n, y = np.asarray(n, dtype=float), np.asarray(y, dtype=float)
    ok = np.flatnonzero(np.isfinite(y) & (y > 0))
    if not len(ok):
        return np.full_like(n, np.nan)
    i = ok[-1] if anchor == "last" else ok[0]
    return y[i] * n[i] / n


def typical_set_table(running: pd.DataFrame, vocab_sizes: dict[str, int], ns=None) -> pd.DataFrame:
    """Log-size of the typical set against that of all token strings, per model and length ``n``.

    ``running``: columns ``model, n, h_n`` (any number of runs); ``vocab_sizes``: model -> ``V``.
    One row per (model, n): ``n_runs``, ``h_n`` (mean over runs, bits/token) and its range over runs
    ``h_n_min, h_n_max``, ``log2_typical`` =
    ``n·h_n`` (the typical set holds about ``2^(n h_n)`` strings), ``log2_all`` = ``n·log2 V``,
    and ``log2_fraction`` = their difference (≤ 0: the typical set is a ``2^log2_fraction`` share).
    """
    df = running if ns is None else running[running["n"].isin(np.asarray(ns))]
    missing = sorted(set(df["model"]) - set(vocab_sizes))
    if missing:
        raise KeyError(f"no vocabulary size for model(s) {missing}")
    g = df.groupby(["model", "n"], sort=False)["h_n"].agg(["mean", "min", "max", "size"]).reset_index()
    g = g.rename(columns={"mean": "h_n", "min": "h_n_min", "max": "h_n_max", "size": "n_runs"})
    log2_v = g["model"].map(lambda m: math.log2(vocab_sizes[m]))
    g["log2_typical"] = g["n"] * g["h_n"]
    g["log2_all"] = g["n"] * log2_v
    g["log2_fraction"] = g["log2_typical"] - g["log2_all"]
    return g[["model", "n", "n_runs", "h_n", "h_n_min", "h_n_max", "log2_typical", "log2_all", "log2_fraction"]]


# --- decoding settings: what temperature, top-p and top-k do to typicality ---------------------------------


def decoding_table(runs: pd.DataFrame, scores: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """One row per generation of a sweep of decoding settings: ``run_id, model, setting`` and

    - ``z_q`` / ``z_p``: the final ``z`` under the sampling distribution ``q`` and under the raw ``p``
      (``runs``: stored generation rows with a ``setting`` column, ``z_samp`` and ``z_raw``);
    - ``z_other``: ``z`` of the text under the raw ``p`` of the other models (mean over them) and
      ``bpb_gap``: their bits per byte (mean) minus that of the text's own model, on the same characters
      (``scores``: ``attribution.attribution_table`` rows of one length);
    - ``attributed_<method>``: 1.0 when the ``decisions`` of that method (``attribution.decide`` rows,
      one per run) named the text's model, else 0.0, in the order the methods appear.
    """
    per_text = runs[["run_id", "model", "setting", "z_samp", "z_raw"]].rename(columns={"z_samp": "z_q", "z_raw": "z_p"})
    own = scores[scores["candidate_model"] == scores["source_model"]].set_index("run_id")
    other = scores[scores["candidate_model"] != scores["source_model"]].groupby("run_id")
    per_text["z_other"] = per_text["run_id"].map(other["z"].mean())
    per_text["bpb_gap"] = per_text["run_id"].map(other["bpb"].mean() - own["bpb"])
    for method, d in decisions.groupby("method", sort=False):
        d = d.set_index("run_id")
        if not d.index.is_unique:
            raise ValueError(f"decisions of {method!r}: more than one per run (give one length)")
        per_text[f"attributed_{method}"] = per_text["run_id"].map(d["correct_model"]).astype(float)
    return per_text


def group_cis(df: pd.DataFrame, by, metrics, shares=(), n_resamples: int = 2000, confidence: float = 0.95,
              seed: int = 0) -> pd.DataFrame:
    """Per group of ``by`` (in order of appearance) and column of ``metrics``: the mean with a percentile
    bootstrap CI over the rows (``inference.bootstrap_ci``; NaNs dropped). Columns named in ``shares``
    hold 0/1 values and are summarised as a share. Returns ``by..., metric, mean, low, high, n``."""
    by = [by] if isinstance(by, str) else list(by)
    rows = []
    for key, g in df.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            stat = inference.share if metric in shares else np.mean
            ci = inference.bootstrap_ci(g[metric], statistic=stat, confidence=confidence, n_resamples=n_resamples,
                                        seed=seed)
            rows.append(dict(zip(by, key)) | {"metric": metric, "mean": ci.estimate, "low": ci.low, "high": ci.high,
                                              "n": ci.n})
    return pd.DataFrame(rows, columns=[*by, "metric", "mean", "low", "high", "n"])


def z_test_shares(df: pd.DataFrame, by, z_columns: dict[str, str], alpha: float = 0.05) -> pd.DataFrame:
    """Per group of ``by`` (in order of appearance): the share of rows whose two-sided z-test rejects the
    AEP at ``alpha`` (``inference.add_pvalues``), one column ``reject_<name>`` per ``{name: z column}``
    of ``z_columns``, and ``n``."""
    by = [by] if isinstance(by, str) else list(by)
    tested = df
    for name, column in z_columns.items():
        tested = inference.add_pvalues(tested, column, None, alpha=alpha, suffix=f"_{name}")
    rows = []
    for key, g in tested.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append(dict(zip(by, key)) | {f"reject_{n}": float(g[f"reject_{n}"].mean()) for n in z_columns}
                    | {"n": len(g)})
    return pd.DataFrame(rows, columns=[*by, *(f"reject_{n}" for n in z_columns), "n"])


def shift_tests(df: pd.DataFrame, baseline: str, settings, metrics=("z_q", "z_p"), by: str = "model",
                setting: str = "setting", alpha: float = 0.05) -> pd.DataFrame:
    """Each of ``settings`` (but ``baseline``) against the ``baseline`` setting of the same ``by`` group,
    per column of ``metrics`` (``inference.compare_groups``: Welch and Mann-Whitney).

    One row per (group, setting, metric): ``diff`` (mean shift), ``d`` (Cohen's d), ``r_rb``
    (rank-biserial), ``p_welch``, ``p_mw``, their Holm-adjusted ``p_welch_holm`` / ``p_mw_holm`` over
    all rows, and ``robust``: both adjusted p-values below ``alpha``. No rows: an empty table.
    """
    rows = []
    for key, g in df.groupby(by, sort=False):
        base = g[g[setting] == baseline]
        for s in [s for s in settings if s != baseline]:
            sel = g[g[setting] == s]
            for metric in metrics:
                t = inference.compare_groups(sel[metric], base[metric])
                rows.append({by: key, "setting": s, "metric": metric, "diff": t["diff"], "d": t["cohens_d"],
                             "r_rb": t["r_rb"], "p_welch": t["p_welch"], "p_mw": t["p_mannwhitney"]})
    cols = [by, "setting", "metric", "diff", "d", "r_rb", "p_welch", "p_mw"]
    tests = pd.DataFrame(rows, columns=cols)
    if len(tests):
        tests["p_welch_holm"] = inference.holm(tests["p_welch"])
        tests["p_mw_holm"] = inference.holm(tests["p_mw"])
        tests["robust"] = (tests["p_welch_holm"] < alpha) & (tests["p_mw_holm"] < alpha)
    else:
        tests = tests.assign(p_welch_holm=pd.Series(dtype=float), p_mw_holm=pd.Series(dtype=float),
                             robust=pd.Series(dtype=bool))
    return tests
