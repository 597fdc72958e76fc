"""Store -> tables of comparisons (one model's text scored by another) and of scored external texts.

- ``comparison_runs`` / ``comparison_running``: the stored comparison records and their running values;
- ``compare``: one row per record, judged usable / skipped / failed with the reason (``aep compare``);
- ``summarize_comparisons``: per pair and overall, the counts and the distribution of ``h^(A,B)``;
- ``window_summaries`` / ``self_baseline_windows``: ``z`` per window of external texts and of the
  self-generated baseline.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .comparisons import COMPARISON_LABEL
from .score import ScoringError
from .stats import comparison_summary, running, window_summaries
from .store import RunStore, StoreError


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
        cols = ["surprisal_samp", "cross_entropy", "cross_varentropy"]
    elif view in ("scorer", "scorer_raw"):
        dist = "samp" if view == "scorer" else "raw"
        cols = [f"surprisal_{dist}", f"entropy_{dist}", f"varentropy_{dist}"]
    else:
        raise ValueError(f"view must be scorer, scorer_raw or cross, got {view!r}")
    tokens = store.tokens(run_id, columns=cols)
    return pd.DataFrame(running(*(tokens[c].to_numpy() for c in cols)))


_NEEDED = ["surprisal_samp", "entropy_samp", "varentropy_samp", "surprisal_raw"]


_CROSS = ["cross_entropy", "cross_varentropy", "kl", "entropy_ref"]


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


def self_baseline_windows(store: RunStore, runs: pd.DataFrame, window_tokens: int, dist: str = "raw") -> pd.DataFrame:
    """Per-window ``z`` of self-generated text (stored generation runs), the baseline for external texts."""
    frames = []
    ok = runs[runs["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame(columns=["run_id", "model", "window", "l", "h", "D", "sigma", "z"])
    cols = [f"surprisal_{dist}", f"entropy_{dist}", f"varentropy_{dist}"]
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
    reasons, and mean/median/min/max of ``h^(A,B)``, of ``D = l^B - h^B`` and the mean ``z^B``."""
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
        out.append(row)
    return pd.DataFrame(out)
