"""How the per-token statistics of a generation move with its length (docs/science.md names, all bits).

Two phenomena measured since the study:

- **entropy-rate drift** (Cao, Valiant & Liang, arXiv 2511.11966: per-step entropy grows with the
  generation's length): the entropy ``H_t`` of self-generated text against its position ``t`` (``t = 1``
  is the first generated token), averaged in log-spaced position bins (``position_bins``,
  ``binned_entropy``), a per-run slope in bits per doubling of ``t`` and in bits per 1,000 tokens
  (``entropy_slopes``), and per group the mean slope with a bootstrap CI over runs and the verdict
  grows / flat / falls (``slope_summary``, ``trend_verdict``). ``entropy_profile`` / ``entropy_slope_table``
  read stored runs.
- **boredom and confusion** (Basu et al., Mirostat, arXiv 2007.14966): the running log-perplexity
  ``l_n`` under the raw ``p`` against ``n`` for a sweep of decoding settings: it falls for small top-k /
  top-p (the text repeats itself: boredom) and rises at high temperature (confusion). Beside it a
  repetition measure (``repetition_share``: the share of repeated token-id n-grams in a trailing
  window); ``late_slope`` (the slope of ``l_n`` over the second half of a run), ``regime`` (boredom /
  flat / confusion within a tolerance), ``decoding_dynamics`` (one row per run and ``n``) and
  ``setting_summary`` (one row per model and setting).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..core import inference
from ..core.columns import DISTRIBUTIONS, RAW, column, typicality_columns
from ..core.stats import running
from ..runs.generations import ensure_samplings, sampled_with
from ..store.run_store import RunStore

DISTS = DISTRIBUTIONS  # under q (the sampling distribution) and under the raw p


# --- entropy against position -------------------------------------------------------------------------


def position_bins(n_max: int, n_bins: int = 12) -> np.ndarray:
    """Edges of at most ``n_bins`` log-spaced bins of positions ``1..n_max``: int64 ``[k + 1]``, ``edges[0] = 1``,
    ``edges[-1] = n_max + 1``; bin ``i`` holds the positions ``edges[i] <= t < edges[i + 1]`` (equal rounded
    edges merge, so short runs get fewer, one-position bins at the start)."""
    if n_max < 1 or n_bins < 1:
        raise ValueError(f"need n_max >= 1 and n_bins >= 1, got n_max={n_max}, n_bins={n_bins}")
    return np.unique(np.round(np.geomspace(1, n_max + 1, n_bins + 1)).astype(np.int64))


def bin_centres(edges) -> np.ndarray:
    """The geometric centre of each bin's first and last position, ``sqrt(t_lo · t_hi)`` (``[k]`` float)."""
    edges = np.asarray(edges, dtype=float)
    return np.sqrt(edges[:-1] * (edges[1:] - 1))


def binned_entropy(tokens: pd.DataFrame, edges, dists=DISTS) -> pd.DataFrame:
    """Mean entropy per run, distribution and position bin.

    ``tokens``: ``run_id, position`` (0 = first generated token, so ``t = position + 1``) and
    ``entropy_<dist>`` for each of ``dists`` present. Positions outside the edges are left out. One row per
    (run, dist, bin): ``run_id, dist, bin, t_lo, t_hi`` (the bin's first and last position), ``t_mid``
    (``bin_centres``), ``n_positions`` and ``H`` (mean ``H_t`` in the bin, bits).
    """
    edges = np.asarray(edges, dtype=np.int64)
    t = tokens["position"].to_numpy(dtype=np.int64) + 1
    b = np.searchsorted(edges, t, side="right") - 1
    keep = (b >= 0) & (b < len(edges) - 1)
    df = tokens.loc[keep].assign(bin=b[keep])
    frames = []
    for dist in [d for d in dists if column("entropy", d) in tokens]:
        g = df.groupby(["run_id", "bin"], sort=False)[column("entropy", dist)].agg(["mean", "size"]).reset_index()
        frames.append(g.rename(columns={"mean": "H", "size": "n_positions"}).assign(dist=dist))
    cols = ["run_id", "dist", "bin", "t_lo", "t_hi", "t_mid", "n_positions", "H"]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    out["t_lo"] = edges[out["bin"].to_numpy()]
    out["t_hi"] = edges[out["bin"].to_numpy() + 1] - 1
    out["t_mid"] = bin_centres(edges)[out["bin"].to_numpy()]
    return out[cols].sort_values(["run_id", "dist", "bin"], kind="stable").reset_index(drop=True)


def ols_slope(x, y) -> float:
    """Least-squares slope of ``y`` against ``x`` over the finite pairs (NaN with fewer than two distinct x)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2 or np.all(x == x[0]):
        return math.nan
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())


def entropy_slopes(tokens: pd.DataFrame, edges, dists=DISTS) -> pd.DataFrame:
    """Per run and distribution, how ``H_t`` moves with the position ``t``:

    - ``slope_doubling``: least-squares slope of the bin means (``binned_entropy``) against ``log2 t_mid``,
      bits per doubling of the position (each bin weighs the same: a log-spaced fit);
    - ``slope_per_1k``: least-squares slope of ``H_t`` against ``t`` over every position, bits per 1,000
      tokens (late positions dominate it);
    - ``H_first`` / ``H_last``: the mean of the first and last bin; ``H_mean``: over every position.
    """
    binned = binned_entropy(tokens, edges, dists)
    t = tokens["position"].to_numpy(dtype=float) + 1
    rows = []
    for (run_id, dist), g in binned.groupby(["run_id", "dist"], sort=False):
        mine = (tokens["run_id"] == run_id).to_numpy()
        h = tokens[column("entropy", dist)].to_numpy(dtype=float)[mine]
        rows.append({"run_id": run_id, "dist": dist, "n_bins": len(g),
                     "slope_doubling": ols_slope(np.log2(g["t_mid"]), g["H"]),
                     "slope_per_1k": 1000.0 * ols_slope(t[mine], h), "H_first": float(g["H"].iloc[0]),
                     "H_last": float(g["H"].iloc[-1]), "H_mean": float(np.mean(h))})
    return pd.DataFrame(rows, columns=["run_id", "dist", "n_bins", "slope_doubling", "slope_per_1k", "H_first",
                                       "H_last", "H_mean"])


def trend_verdict(low: float, high: float) -> str:
    """``grows`` when a CI lies above 0, ``falls`` when below, ``flat`` when it holds 0 (``undetermined``: NaN)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "undetermined"
    return "grows" if low > 0 else "falls" if high < 0 else "flat"


def slope_summary(slopes: pd.DataFrame, by, metrics=("slope_doubling", "slope_per_1k"), n_resamples: int = 2000,
                  confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per group of ``by`` (in order of appearance) and slope column of ``metrics``: the mean over runs with
    a percentile bootstrap CI (``inference.bootstrap_ci``) and its ``verdict`` (``trend_verdict``).
    Columns: ``by..., metric, mean, low, high, n_runs, verdict``."""
    by = [by] if isinstance(by, str) else list(by)
    rows = []
    for key, g in slopes.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            ci = inference.bootstrap_ci(g[metric], confidence=confidence, n_resamples=n_resamples, seed=seed)
            rows.append(dict(zip(by, key)) | {"metric": metric, "mean": ci.estimate, "low": ci.low, "high": ci.high,
                                              "n_runs": ci.n, "verdict": trend_verdict(ci.low, ci.high)})
    return pd.DataFrame(rows, columns=[*by, "metric", "mean", "low", "high", "n_runs", "verdict"])


def drift_table(slopes: pd.DataFrame, by=("model", "setting", "dist"), n_resamples: int = 2000,
                seed: int = 0) -> pd.DataFrame:
    """One row per group of ``by`` (in order of appearance) of ``entropy_slopes`` rows: ``n_runs``, the mean
    ``H_first`` / ``H_last`` (bits), and for ``doubling`` (bits per doubling of ``t``) and ``per_1k`` (bits per
    1,000 tokens) the mean slope, its CI ``<metric>_low`` / ``<metric>_high`` and ``<metric>_verdict``."""
    by = [by] if isinstance(by, str) else list(by)
    ci = slope_summary(slopes, by, n_resamples=n_resamples, seed=seed)
    rows = []
    for key, g in slopes.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key)) | {"n_runs": len(g), "H_first": g["H_first"].mean(), "H_last": g["H_last"].mean()}
        mine = ci.loc[(ci[by] == pd.Series(dict(zip(by, key)))).all(axis=1)].set_index("metric")
        for metric, name in (("slope_doubling", "doubling"), ("slope_per_1k", "per_1k")):
            row |= {name: mine.at[metric, "mean"], f"{name}_low": mine.at[metric, "low"],
                    f"{name}_high": mine.at[metric, "high"], f"{name}_verdict": mine.at[metric, "verdict"]}
        rows.append(row)
    return pd.DataFrame(rows)


RUN_META = ("run_id", "model", "prompt_id", "seed", "setting")


def _entropy_tokens(store: RunStore, runs: pd.DataFrame) -> pd.DataFrame:
    return store.tokens(runs["run_id"].tolist(), columns=["run_id", "position", *(column("entropy", d) for d in DISTS)])


def entropy_profile(store: RunStore, runs: pd.DataFrame, edges) -> pd.DataFrame:
    """``binned_entropy`` of stored generations ``runs`` (with a ``setting`` column, as
    ``tables.ensure_self_grid`` gives), joined to each run's ``model, prompt_id, seed, setting``."""
    meta = runs[[c for c in RUN_META if c in runs]]
    return binned_entropy(_entropy_tokens(store, runs), edges).merge(meta, on="run_id", how="left")


def entropy_slope_table(store: RunStore, runs: pd.DataFrame, edges) -> pd.DataFrame:
    """``entropy_slopes`` of stored generations ``runs``, joined to each run's ``model, prompt_id, seed, setting``."""
    meta = runs[[c for c in RUN_META if c in runs]]
    return entropy_slopes(_entropy_tokens(store, runs), edges).merge(meta, on="run_id", how="left")


def profile_means(profile: pd.DataFrame, by) -> pd.DataFrame:
    """Per group of ``by`` and bin: the mean ``H`` over runs, its standard error (``se``, ddof 1; NaN for one
    run) and ``n_runs``, with the bin's ``t_mid``."""
    by = [by] if isinstance(by, str) else list(by)
    g = profile.groupby([*by, "bin", "t_mid"], sort=False)["H"]
    out = g.agg(["mean", "std", "size"]).reset_index().rename(columns={"mean": "H", "size": "n_runs"})
    out["se"] = out["std"] / np.sqrt(out["n_runs"])
    return out.drop(columns="std")


# --- boredom and confusion: l_n and repetition against length -------------------------------------------


def repetition_share(token_ids, n: int = 4, window: int = 64) -> np.ndarray:
    """Per position ``t`` (``[len]`` float64): the share of repeated n-grams among the token-id n-grams lying
    wholly inside the trailing window of the last ``window`` tokens (positions ``t - window + 1 .. t``),
    ``1 - distinct / total`` (Welleck et al.'s seq-rep-n, within the window). 0: no n-gram repeats; near 1:
    the window is one n-gram over and over. NaN while the window holds no whole n-gram (``t < n - 1``)."""
    if n < 1 or window < n:
        raise ValueError(f"need 1 <= n <= window, got n={n}, window={window}")
    ids = np.asarray(token_ids, dtype=np.int64)
    out = np.full(len(ids), np.nan)
    grams = [tuple(ids[j - n + 1 : j + 1].tolist()) for j in range(n - 1, len(ids))]  # grams[j - n + 1] ends at j
    counts: dict[tuple, int] = {}
    for t in range(n - 1, len(ids)):
        g = grams[t - n + 1]
        counts[g] = counts.get(g, 0) + 1
        leaving = t - window + n - 1  # the n-gram ending here no longer lies inside the window
        if leaving >= n - 1:
            old = grams[leaving - n + 1]
            counts[old] -= 1
            if not counts[old]:
                del counts[old]
        total = t - max(n - 1, t - window + n) + 1
        out[t] = 1.0 - len(counts) / total
    return out


def late_slope(l_n, start_frac: float = 0.5) -> float:
    """Least-squares slope of a running ``l_n`` (``n = 1..N``) over ``n >= start_frac · N``, in bits per token
    per 100 tokens (> 0: rising, confusion; < 0: falling, boredom). NaN with fewer than two points."""
    if not 0 <= start_frac < 1:
        raise ValueError(f"start_frac must be in [0, 1), got {start_frac}")
    y = np.asarray(l_n, dtype=float)
    n = np.arange(1, len(y) + 1, dtype=float)
    keep = n >= start_frac * len(y)
    return 100.0 * ols_slope(n[keep], y[keep])


def regime(slope: float, tolerance: float) -> str:
    """``boredom`` (``slope < -tolerance``), ``confusion`` (``> tolerance``) or ``flat``; ``undetermined`` for NaN."""
    if not np.isfinite(slope):
        return "undetermined"
    return "boredom" if slope < -tolerance else "confusion" if slope > tolerance else "flat"


def decoding_dynamics(store: RunStore, runs: pd.DataFrame, n_gram: int = 4, window: int = 64) -> pd.DataFrame:
    """One row per stored generation of ``runs`` (with a ``setting`` column) and length ``n``: ``run_id,
    model, setting, n``, the running ``l_n`` and ``h_n`` under the raw ``p`` (bits/token) and ``rep``, the
    ``repetition_share`` of the trailing window ending at token ``n``."""
    tokens = store.tokens(runs["run_id"].tolist(), columns=["run_id", "position", "token_id", *typicality_columns(RAW)])
    meta = runs.set_index("run_id")
    frames = []
    for run_id, g in tokens.groupby("run_id", sort=False):
        r = running(*(g[c] for c in typicality_columns(RAW)))
        frames.append(pd.DataFrame({"run_id": run_id, "model": meta.at[run_id, "model"],
                                    "setting": meta.at[run_id, "setting"], "n": r["n"], "l_n": r["l_n"],
                                    "h_n": r["h_n"], "rep": repetition_share(g["token_id"], n_gram, window)}))
    cols = ["run_id", "model", "setting", "n", "l_n", "h_n", "rep"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def setting_summary(dynamics: pd.DataFrame, tolerance: float, start_frac: float = 0.5, n_resamples: int = 2000,
                    seed: int = 0) -> pd.DataFrame:
    """One row per model and setting (in order of appearance) of ``decoding_dynamics`` rows: ``n_runs``,
    the final ``l`` and ``rep`` (means over runs), ``l_half`` (mean ``l_n`` at the start of the second half),
    the ``late_slope`` of ``l_n`` (mean over runs, bits/token per 100 tokens) with a bootstrap CI
    (``slope_low`` / ``slope_high``) and the ``regime`` of the mean slope within ``tolerance``."""
    rows = []
    for (model, setting), g in dynamics.groupby(["model", "setting"], sort=False):
        per_run = []
        for _, r in g.groupby("run_id", sort=False):
            r = r.sort_values("n")
            half = r.iloc[min(len(r) - 1, math.ceil(start_frac * len(r)) - 1)] if len(r) else None
            per_run.append({"slope": late_slope(r["l_n"], start_frac), "l": r["l_n"].iloc[-1],
                            "rep": r["rep"].iloc[-1], "l_half": half["l_n"]})
        per_run = pd.DataFrame(per_run)
        ci = inference.bootstrap_ci(per_run["slope"], n_resamples=n_resamples, seed=seed)
        rows.append({"model": model, "setting": setting, "n_runs": len(per_run), "l": per_run["l"].mean(),
                     "l_half": per_run["l_half"].mean(), "rep": per_run["rep"].mean(), "slope": ci.estimate,
                     "slope_low": ci.low, "slope_high": ci.high, "regime": regime(ci.estimate, tolerance)})
    return pd.DataFrame(rows, columns=["model", "setting", "n_runs", "l", "l_half", "rep", "slope", "slope_low",
                                       "slope_high", "regime"])


def ensure_setting_runs(store: RunStore, models, samplings: dict, prompt_ids, seeds, max_new_tokens: int,
                        batch_size: int = 8, device: str = "auto", dtype: str = "auto") -> pd.DataFrame:
    """The stored generations of every model at every decoding setting of ``samplings`` (label ->
    ``Sampling``), generated when missing (``runs.ensure_samplings``: the settings share batches), with a
    ``setting`` column. A greedy setting is generated for the first seed only: every seed gives the same
    text. Failed runs raise."""
    seeds_by_sampling = {}
    for sampling in samplings.values():  # every setting planned at once: they share batches
        seeds_by_sampling[sampling] = list(seeds)[:1] if sampling.greedy else list(seeds)
    runs = ensure_samplings(store, list(models), list(prompt_ids), seeds_by_sampling, max_new_tokens,
                            batch_size=batch_size, device=device, dtype=dtype, progress=False)
    frames = [runs[sampled_with(runs, sampling) & runs["seed"].isin(seeds_by_sampling[sampling])].assign(setting=label)
              for label, sampling in samplings.items()]
    runs = pd.concat(frames, ignore_index=True)
    bad = runs[runs["status"] != "ok"]
    if len(bad):
        raise RuntimeError(f"{len(bad)} generation(s) failed; first error: {str(bad['error'].iloc[0]).splitlines()[0]}")
    return runs


def setting_curves(dynamics: pd.DataFrame) -> pd.DataFrame:
    """The mean ``l_n`` and ``rep`` over runs per model, setting and ``n`` of ``decoding_dynamics`` rows
    (NaN repetition shares, before the first whole n-gram, left out): ``model, setting, n, l_n, rep, n_runs``."""
    g = dynamics.groupby(["model", "setting", "n"], sort=False)
    out = g.agg(l_n=("l_n", "mean"), rep=("rep", "mean"), n_runs=("run_id", "size")).reset_index()
    return out


def turning_points(summary: pd.DataFrame) -> pd.DataFrame:
    """Where ``l_n`` turns from falling to rising along the settings of ``setting_summary`` rows, in their
    order (from cool to hot): one row per model and pair of neighbouring settings whose mean slopes go from
    ``< 0`` to ``>= 0``: ``model, below, above, slope_below, slope_above``."""
    rows = []
    for model, g in summary.groupby("model", sort=False):
        s = g["slope"].to_numpy(dtype=float)
        for i in range(len(g) - 1):
            if s[i] < 0 <= s[i + 1]:
                rows.append({"model": model, "below": g["setting"].iloc[i], "above": g["setting"].iloc[i + 1],
                             "slope_below": s[i], "slope_above": s[i + 1]})
    return pd.DataFrame(rows, columns=["model", "below", "above", "slope_below", "slope_above"])
