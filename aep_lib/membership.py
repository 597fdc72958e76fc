"""Training-data inference: over-typicality as a membership score.

Text the model has memorised is *over-typical* for it: each token is more likely than the model's
average token at that position, so ``z`` falls below what the model's own samples give (the
self-generated baseline, ``z ~ N(0, 1)``). Two scores per window of ``window_tokens`` tokens:

- ``over_typicality = -z`` and its place in the self-generated baseline, ``baseline_quantile`` = the
  share of the model's own windows with a ``z`` at most this one (small = more member-like);
- Min-K%++ (``detect.detector_scores``): the mean of the ``k`` lowest standardised log-probabilities,
  and Min-K% for reference.

The windows come from ``comparisons.ensure_text_scores`` (the cross-model issue's corpus scoring, cached in
the store) and the baseline from ``cross.self_baseline_windows`` over stored generations; this module
only adds the scores and their AUROC.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .detect import detector_scores
from .models import load_tokenizer
from .stats import full_windows

SCORES = {"over_typicality": "-z (over-typical = member-like)", "min_k_pp": "Min-K%++", "min_k": "Min-K%",
          "log_likelihood": "mean log2 p"}


def window_scores(tokens: pd.DataFrame, window_tokens: int, k: float = 0.2, tokenizer=None) -> pd.DataFrame:
    """Per full window of ``window_tokens`` tokens (``window`` column, else from ``position``): ``z``,
    ``over_typicality``, ``min_k``, ``min_k_pp``, ``log_likelihood``, and ``zlib_ratio`` when a
    ``tokenizer`` can decode ``token_id``."""
    rows = []
    for w, g in full_windows(tokens, window_tokens):
        text = tokenizer.decode(g["token_id"].astype(int).tolist()) if tokenizer is not None else None
        s = detector_scores(g, text, k=k)
        rows.append({"window": w, "n_tokens": len(g), "z": s["z"], "over_typicality": -s["z"],
                     "min_k": s["min_k"], "min_k_pp": s["min_k_pp"], "log_likelihood": s["log_likelihood"],
                     "zlib_ratio": s["zlib_ratio"]})
    return pd.DataFrame(rows)


def text_windows(store, text_runs: pd.DataFrame, window_tokens: int, k: float = 0.2) -> pd.DataFrame:
    """``window_scores`` of every ok external-text run (``comparisons.ensure_text_scores`` rows), with the run's
    ``text_id``, ``group`` and scorer ``model``."""
    frames = []
    for _, run in text_runs[text_runs["status"] == "ok"].iterrows():
        tokens = store.tokens(run["run_id"])
        if tokens.empty:
            continue
        w = window_scores(tokens.sort_values("position"), window_tokens, k, load_tokenizer(str(run["model"])))
        frames.append(w.assign(text_id=run["text_id"], group=run["group"], model=run["model"], run_id=run["run_id"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def generation_windows(store, gen_runs: pd.DataFrame, window_tokens: int, k: float = 0.2) -> pd.DataFrame:
    """``window_scores`` of stored generations under their own model's raw ``p`` (the self-generated
    baseline; group "self")."""
    frames = []
    ok = gen_runs[gen_runs["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame()
    tokens = store.tokens(ok["run_id"].tolist())
    for run_id, g in tokens.groupby("run_id", sort=False):
        model = ok.loc[ok["run_id"] == run_id, "model"].iloc[0]
        w = window_scores(g.sort_values("position"), window_tokens, k, load_tokenizer(str(model)))
        frames.append(w.assign(text_id=run_id, group="self", model=model, run_id=run_id))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def baseline_quantile(z, baseline_z) -> np.ndarray:
    """Share of self-generated baseline windows with ``z`` at most each given ``z`` (NaN-safe)."""
    b = np.sort(np.asarray(baseline_z, dtype=float)[~np.isnan(np.asarray(baseline_z, dtype=float))])
    z = np.asarray(z, dtype=float)
    if not len(b):
        return np.full(z.shape, np.nan)
    return np.where(np.isnan(z), np.nan, np.searchsorted(b, z, side="right") / len(b))
