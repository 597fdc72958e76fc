"""Store -> tables of comparisons (one model's text scored by another) and of scored external texts.

- ``comparison_runs`` / ``comparison_running``: the stored comparison records and their running values;
- ``compare``: one row per record, judged usable / skipped / failed with the reason (``aep compare``);
- ``summarize_comparisons``: per pair and overall, the counts and the distribution of ``h^(A,B)``;
- ``record_of``: the one record of a pair for a prompt and seed;
- ``text_window_summaries`` / ``self_baseline_windows``: ``l, h, D, sigma, z`` per window of scored
  external texts and of the self-generated baseline; ``baseline_band`` and ``memorisation_table``:
  where each text's mean window ``z`` lies against the baseline (the memorised-texts notebook);
- ``membership_windows``, ``membership_groups``, ``membership_tests``, ``membership_aurocs``,
  ``window_group_means``: over-typicality as a membership score, classic books against news (the
  membership notebook).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..core import inference
from ..core.columns import CROSS, RAW, SAMP, column, statistic_columns, typicality_columns
from ..core.stats import comparison_summary, running, window_summaries
from ..engine.score import ScoringError
from ..runs.comparisons import COMPARISON_LABEL
from ..store.run_store import RunStore, StoreError
from .membership import baseline_quantile


def comparison_runs(store: RunStore, pair: str | None = None, status: str | None = "ok") -> pd.DataFrame:
    """Stored comparison records (optionally one pair, one status)."""
    runs = store.runs(kind="score", source_kind="generation")
    if pair is not None:
        runs = runs[runs["pair"] == pair]
    if status is not None:
        runs = runs[runs["status"] == status]
    return runs.reset_index(drop=True)


def comparison_running(store: RunStore, run_id: str, view: str = "scorer") -> pd.DataFrame:
    """Running statistics of one comparison record.

    ``view``: ``scorer`` (B's ``l_n, h_n, z_n`` under ``q_B``), ``scorer_raw`` (under ``p_B``) or
    ``cross`` (``l^B_n``, ``h^(A,B)_n``, ``z^(A,B)_n``; raises ``ScoringError`` when the record was
    scored by re-tokenizing: different vocabularies have no cross-entropy).
    """
    row = store.get_run(run_id)
    if row is None:
        raise StoreError(f"no stored run {run_id!r}")
    if view == "cross":
        if row.get("mode") != "joint":
            raise ScoringError(
                f"vocabulary mismatch: {row.get('source_model')} and {row.get('scorer')} tokenize differently "
                "(this record was scored by re-tokenizing); cross-entropy h^(A,B) needs one shared vocabulary: "
                "compare them by their own l, h, z and bits per byte"
            )
        cols = typicality_columns(SAMP, cross=True)
    elif view in ("scorer", "scorer_raw"):
        cols = typicality_columns(SAMP if view == "scorer" else RAW)
    else:
        raise ValueError(f"view must be scorer, scorer_raw or cross, got {view!r}")
    tokens = store.tokens(run_id, columns=list(cols))
    return pd.DataFrame(running(*(tokens[c].to_numpy() for c in cols)))


def running_at(store: RunStore, records: pd.DataFrame, lengths) -> pd.DataFrame:
    """The cross-AEP read at lengths ``n`` of joint-pass comparison ``records`` (``compare`` rows): one row per
    (record, n <= its length): ``run_id, pair, source, scorer, n, l`` (``l^B_n``), ``h_cross``
    (``h^(A,B)_n``), ``z_cross`` (``z^(A,B)_n``), ``h`` (B's own ``h^B_n``) and ``z`` (``z^B_n``, under ``q_B``)."""
    rows = []
    for _, rec in records.iterrows():
        cross = comparison_running(store, rec["run_id"], "cross")
        own = comparison_running(store, rec["run_id"], "scorer")
        for n in lengths:
            if n > len(cross):
                continue
            i = int(n) - 1
            rows.append({"run_id": rec["run_id"], "pair": rec["pair"], "source": rec["source"], "scorer": rec["scorer"],
                         "n": int(n), "l": float(cross["l_n"].iloc[i]), "h_cross": float(cross["h_n"].iloc[i]),
                         "z_cross": float(cross["z_n"].iloc[i]), "h": float(own["h_n"].iloc[i]),
                         "z": float(own["z_n"].iloc[i])})
    return pd.DataFrame(rows, columns=["run_id", "pair", "source", "scorer", "n", "l", "h_cross", "z_cross", "h", "z"])


_NEEDED = [*typicality_columns(SAMP), column("surprisal", RAW)]  # what every record must have
_CROSS = statistic_columns(CROSS)  # and a joint pass's record


def _first_line(text) -> str:
    text = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return re.sub(r"(/[^\s:]+)+", lambda m: Path(m.group(0)).name, line)[:160]  # file names, not paths


def _is_comparison(row, root: Path) -> bool:
    if row.get("source_kind") == "generation":
        return True
    try:
        rel = Path(str(row.get("path"))).relative_to(root)
    except ValueError:
        return False
    return len(rel.parts) == 4 and rel.parts[0] == "score" and rel.parts[3].startswith(COMPARISON_LABEL + "-")


def _judge(row, tokens: pd.DataFrame) -> tuple[str, str, dict]:
    """``(status, reason, values)`` of one readable record, recomputed from its token rows."""
    missing = [c for c in _NEEDED if c not in tokens]
    if row.get("mode") == "joint":
        missing += [c for c in _CROSS if c not in tokens]
    if missing:
        return "skipped", f"incomplete: no column {missing}", {}
    n = row.get("n_tokens")
    if n is None or pd.isna(n) or int(n) != len(tokens):
        return "skipped", f"incomplete: {len(tokens)} token rows, the record says {n}", {}
    if len(tokens) == 0:
        return "skipped", "no tokens", {}
    s = comparison_summary(tokens)
    values = {"l": s["l_samp"], "h": s["h_samp"], "D": s["D_samp"], "z": s["z_samp"], "z_raw": s["z_raw"],
              "D_raw": s["D_raw"], "h_cross": s.get("h_cross", math.nan), "z_cross": s.get("z_cross", math.nan),
              "kl": s.get("kl_mean", math.nan), "n_tokens": len(tokens)}
    if np.isinf(tokens["surprisal_samp"]).any():
        return "skipped", "l^B = +inf: B's sampling distribution excludes a token of A's text", values
    if "cross_entropy" in tokens and np.isinf(tokens["cross_entropy"]).any():
        return "skipped", "h^(A,B) = +inf: q_A puts mass on tokens B's sampling distribution excludes", values
    if not all(math.isfinite(values[k]) for k in ("l", "h", "D")):
        return "skipped", "non-finite statistics (NaN)", values
    if not math.isfinite(values["z"]):
        return "skipped", f"z undefined: {s['z_reason_samp'] or 'NaN'}", values
    return "usable", "", values


def compare(store: RunStore, run_ids=None) -> pd.DataFrame:
    """One row per comparison record in ``store`` (only ``run_ids``, when given): ``pair``, ``source``,
    ``scorer``, ``mode``, ``status``
    (usable / skipped / failed), ``reason``, and the record's ``l, h, D = l^B - h^B, z`` (under ``q_B``),
    ``z_raw``, ``h_cross = h^(A,B)``, ``z_cross``, ``kl``, recomputed from its token rows.

    A corrupt or incomplete record (unreadable file, missing columns, a token count that disagrees,
    an infinite statistic) is counted with its reason, never fatal.
    """
    root = Path(store.root)
    runs = store.runs()
    if run_ids is not None:
        runs = runs[runs["run_id"].isin(list(run_ids))]
    rows = []
    for _, run in runs.iterrows():
        row = {k: (None if (not isinstance(v, (list, dict)) and pd.isna(v)) else v) for k, v in run.items()}
        if not _is_comparison(row, root):
            continue
        out = {"run_id": row["run_id"], "pair": row.get("pair") or "(unknown pair)",
               "source": row.get("source_label"), "scorer": row.get("scorer_label"), "mode": row.get("mode"),
               "prompt_id": row.get("prompt_id"), "seed": row.get("seed"), "self_pair": row.get("self_pair")}
        if row.get("status") != "ok":
            rows.append(out | {"status": "failed", "reason": _first_line(row.get("error"))})
            continue
        try:
            tokens = store.tokens(row["run_id"])
        except Exception as err:  # noqa: BLE001 - a corrupt file is a failed record, never fatal
            rows.append(out | {"status": "failed", "reason": _first_line(f"{type(err).__name__}: {err}")})
            continue
        status, reason, values = _judge(row, tokens)
        rows.append(out | values | {"status": status, "reason": reason})
    cols = ["run_id", "pair", "source", "scorer", "mode", "prompt_id", "seed", "self_pair", "status", "reason",
            "n_tokens", "l", "h", "D", "z", "z_raw", "D_raw", "h_cross", "z_cross", "kl"]
    df = pd.DataFrame(rows)
    for c in cols:
        if c not in df:
            df[c] = np.nan
    return df[cols]


def record_of(runs: pd.DataFrame, pair: str, prompt_id: str, seed: int) -> pd.Series:
    """The comparison record (a row of ``comparisons.ensure_comparisons``) of ``pair`` for one prompt and seed."""
    rows = runs[(runs["pair"] == pair) & (runs["prompt_id"] == prompt_id) & (runs["seed"] == seed)]
    if rows.empty:
        raise KeyError(f"no comparison record of {pair} for prompt {prompt_id!r}, seed {seed}")
    return rows.iloc[0]


def text_window_summaries(store: RunStore, text_runs: pd.DataFrame, window_tokens: int,
                          dist: str = "raw") -> pd.DataFrame:
    """Per full window of every ok external-text run (``comparisons.ensure_text_scores`` rows): ``window,
    l, h, D, sigma, z`` under the scorer's ``dist`` (``raw``: its ``p``), with the run's scorer ``model``,
    ``text_id`` and ``group``. Failed runs are left out (they are in ``text_runs``, with their error)."""
    frames = []
    for _, run in text_runs[text_runs["status"] == "ok"].iterrows():
        w = window_summaries(store.tokens(run["run_id"]), window_tokens, dist)
        frames.append(w.assign(model=run["model"], text_id=run["text_id"], group=run["group"]))
    cols = ["window", "l", "h", "D", "sigma", "z", "model", "text_id", "group"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def self_baseline_windows(store: RunStore, runs: pd.DataFrame, window_tokens: int, dist: str = "raw") -> pd.DataFrame:
    """Per-window ``z`` of self-generated text (stored generation runs), the baseline for external texts."""
    frames = []
    ok = runs[runs["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame(columns=["run_id", "model", "window", "l", "h", "D", "sigma", "z"])
    cols = typicality_columns(dist)
    tokens = store.tokens(ok["run_id"].tolist(), columns=["position", *cols])
    for run_id, g in tokens.groupby("run_id", sort=False):
        w = window_summaries(g, window_tokens, dist)
        frames.append(w.assign(run_id=run_id, model=ok.loc[ok["run_id"] == run_id, "model"].iloc[0]))
    return pd.concat(frames, ignore_index=True)


def _describe(values) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return {"n": 0, "mean": math.nan, "median": math.nan, "min": math.nan, "max": math.nan}
    return {"n": len(v), "mean": float(v.mean()), "median": float(np.median(v)), "min": float(v.min()),
            "max": float(v.max())}


def summarize_comparisons(records: pd.DataFrame) -> pd.DataFrame:
    """Per pair and overall (``pair == "overall"``): counts of usable / skipped / failed records, the
    reasons, and mean/median/min/max of ``h^(A,B)``, ``z^(A,B)``, ``D = l^B - h^B``, ``z^B`` and ``KL``, and
    ``n_z_cross_within_2``: the usable records with ``|z^(A,B)| <= 2`` (the cross-AEP at the end)."""
    out = []
    groups = [(p, g) for p, g in records.groupby("pair", sort=True)] + [("overall", records)]
    for pair, g in groups:
        usable = g[g["status"] == "usable"]
        reasons = g.loc[g["status"] != "usable", ["status", "reason"]].value_counts()
        row = {"pair": pair, "n_records": len(g), "n_usable": len(usable),
               "n_skipped": int((g["status"] == "skipped").sum()), "n_failed": int((g["status"] == "failed").sum()),
               "n_joint": int((g["mode"] == "joint").sum()),
               "reasons": "; ".join(f"{n} {st}: {r}" for (st, r), n in reasons.items())}
        for name, col in (("h_cross", "h_cross"), ("D", "D"), ("z", "z"), ("z_cross", "z_cross"), ("kl", "kl")):
            row |= {f"{name}_{k}": v for k, v in _describe(usable[col].tolist()).items()}
        row["n_z_cross_within_2"] = int((pd.to_numeric(usable["z_cross"]).abs() <= 2).sum())
        out.append(row)
    return pd.DataFrame(out)


# --- where external texts lie against the self-generated baseline ---------------------------------------


def baseline_band(baseline: pd.DataFrame) -> pd.DataFrame:
    """Per model (in order of appearance) of self-generated baseline windows (``model, z, D``): ``windows``,
    the mean window ``z``, its standard deviation ``z_sd`` (ddof 1) and the mean ``D``."""
    rows = [{"model": model, "windows": len(g), "z": g["z"].mean(), "z_sd": g["z"].std(ddof=1), "D": g["D"].mean()}
            for model, g in baseline.groupby("model", sort=False)]
    return pd.DataFrame(rows, columns=["model", "windows", "z", "z_sd", "D"])


def memorisation_table(windows: pd.DataFrame, baseline: pd.DataFrame, texts, groups=("news", "essay"),
                       models=None) -> pd.DataFrame:
    """Per model and text: ``windows``, the mean window ``z`` and ``D``, and ``sd_from_baseline`` = how many
    baseline standard deviations the mean ``z`` lies from the self-generated baseline's mean (negative:
    below it, the direction of memorisation).

    ``windows``: ``text_window_summaries`` rows; ``baseline``: ``self_baseline_windows`` rows. One row per
    ``text_id`` of ``texts``, then per group of ``groups`` (all its texts pooled), then the baseline itself
    (``text = "self-generated"``, ``sd_from_baseline = 0``). ``models``: default those of ``baseline``.
    """
    band = baseline_band(baseline).set_index("model")
    rows = []
    for model in (list(models) if models is not None else list(band.index)):
        mean_b, sd_b = band.loc[model, "z"], band.loc[model, "z_sd"]
        w = windows[windows["model"] == model]
        for key, col in [(t, "text_id") for t in texts] + [(g, "group") for g in groups]:
            sel = w[w[col] == key]
            rows.append({"model": model, "text": key, "windows": len(sel), "z": sel["z"].mean(), "D": sel["D"].mean(),
                         "sd_from_baseline": (sel["z"].mean() - mean_b) / sd_b})
        rows.append({"model": model, "text": "self-generated", "windows": int(band.loc[model, "windows"]), "z": mean_b,
                     "D": band.loc[model, "D"], "sd_from_baseline": 0.0})
    return pd.DataFrame(rows, columns=["model", "text", "windows", "z", "D", "sd_from_baseline"])


# --- membership: classic books (likely members) against news, scored per window ----------------------------

MEMBERSHIP_GROUPS = {"self-generated": "self", "classic openings": "opening", "classic, all windows": "classic",
                     "news": "news"}  # row label -> window selection of membership_groups


def membership_windows(windows: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``membership.text_windows`` + ``membership.generation_windows`` rows (groups ``classic``,
    ``news``, ``self``) with ``opening`` (a classic's first window) and ``baseline_quantile``: the share of
    the same model's self-generated windows with a ``z`` at most this one."""
    out = windows.copy()
    out["opening"] = (out["group"] == "classic") & (out["window"] == 0)
    for _, g in out.groupby("model", sort=False):
        out.loc[g.index, "baseline_quantile"] = baseline_quantile(g["z"], g.loc[g["group"] == "self", "z"])
    return out


def _membership_selection(g: pd.DataFrame, name: str) -> pd.Series:
    return g["opening"] if name == "opening" else g["group"] == name


def membership_groups(windows: pd.DataFrame, n_resamples: int = 2000) -> pd.DataFrame:
    """Per model and group of ``membership_windows`` rows (``MEMBERSHIP_GROUPS``, in that order): ``windows``,
    the mean window ``z`` with a 95% bootstrap CI (``z_mean, z_low, z_high``) and ``below_baseline_5pct``:
    the share of its windows below the 5% quantile of the model's self-generated windows."""
    rows = []
    for model, g in windows.groupby("model", sort=False):
        q05 = float(np.quantile(g.loc[g["group"] == "self", "z"], 0.05))
        for label, name in MEMBERSHIP_GROUPS.items():
            sel = _membership_selection(g, name)
            ci = inference.bootstrap_ci(g.loc[sel, "z"], n_resamples=n_resamples)
            rows.append({"model": model, "group": label, "windows": int(sel.sum()), "z_mean": ci.estimate,
                         "z_low": ci.low, "z_high": ci.high,
                         "below_baseline_5pct": float((g.loc[sel, "z"] < q05).mean())})
    return pd.DataFrame(rows, columns=["model", "group", "windows", "z_mean", "z_low", "z_high", "below_baseline_5pct"])


def membership_tests(windows: pd.DataFrame, a: str = "classic", b: str = "news") -> pd.DataFrame:
    """Per model: window ``z`` of group ``a`` against group ``b`` (``inference.compare_groups``: mean
    difference with a bootstrap CI, Welch and Mann-Whitney p-values, Cohen's d, rank-biserial, robust)."""
    rows = [{"model": model} | inference.compare_groups(g.loc[g["group"] == a, "z"], g.loc[g["group"] == b, "z"])
            for model, g in windows.groupby("model", sort=False)]
    return pd.DataFrame(rows)


MEMBERSHIP_POSITIVES = {"all classic windows": "classic", "classic openings": "opening"}


def membership_aurocs(windows: pd.DataFrame, scores=("over_typicality", "min_k_pp", "min_k", "log_likelihood"),
                      negatives: str = "news", n_resamples: int = 1000) -> pd.DataFrame:
    """Per model, score and set of positives (``MEMBERSHIP_POSITIVES``): the AUROC of the score (higher =
    member-like) separating those windows from the ``negatives`` group's, with a 95% stratified bootstrap
    CI (``inference.metric_ci``). Columns ``model, score, positives, AUROC, low, high`` (not rounded)."""
    rows = []
    for model, g in windows.groupby("model", sort=False):
        for score in scores:
            for label, name in MEMBERSHIP_POSITIVES.items():
                a = inference.metric_ci(g.loc[g["group"] == negatives, score], g.loc[_membership_selection(g, name), score],
                                        "auroc", n_resamples=n_resamples)
                rows.append({"model": model, "score": score, "positives": label, "AUROC": a.estimate, "low": a.low,
                             "high": a.high})
    return pd.DataFrame(rows, columns=["model", "score", "positives", "AUROC", "low", "high"])


def window_group_means(windows: pd.DataFrame, groups, by: str = "model", value: str = "z") -> pd.DataFrame:
    """Per ``by`` group and window group of ``groups`` (in that order): ``n``, the mean of ``value`` and
    ``half_width``, the half-width of its normal-approximation 95% interval (1.96 sd / sqrt(n), ddof 1)."""
    rows = []
    for key, g in windows.groupby(by, sort=False):
        for group in groups:
            v = g.loc[g["group"] == group, value].to_numpy(dtype=float)
            rows.append({by: key, "group": group, "n": len(v), "mean": v.mean() if len(v) else math.nan,
                         "half_width": 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else math.nan})
    return pd.DataFrame(rows, columns=[by, "group", "n", "mean", "half_width"])
