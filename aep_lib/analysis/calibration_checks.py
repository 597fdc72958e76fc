"""How well a calibration (``aep_lib.analysis.calibration``) holds on texts it did not see: the false-positive rate
per data set on the held-out human texts, calibrated decisions on each benchmark set with thresholds that
never saw its generator (leave one source out), and the human scores against length."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..core.inference import binomial_ci
from .calibration import bin_thresholds
from .detect import DETECTORS
from .length_bins import bin_of


def generator_of(dataset: str) -> str:
    """The generator of a benchmark set (``xsum_gpt-4`` -> ``gpt-4``): its source in leave-one-source-out."""
    return str(dataset).split("_", 1)[-1]


def flag(rows_cal: pd.DataFrame, edges, test: pd.DataFrame, detector: str, fpr: float) -> np.ndarray:
    """Machine (True) / human for each row of ``test`` (``n_tokens`` and the *raw* ``detector`` score, as
    ``detect.detector_scores`` gives it) under thresholds from the calibration rows ``rows_cal`` (all
    used; machine-oriented scores) at target ``fpr``; NaN scores are never flagged."""
    table = bin_thresholds(rows_cal.assign(split="calibration"), edges, detector, fpr).set_index("bin")["threshold"]
    bins = np.array([bin_of(int(n), edges)[0] for n in test["n_tokens"]], dtype=int)
    oriented = DETECTORS[detector].direction * test[detector].to_numpy(dtype=float)
    return oriented > table.reindex(bins).to_numpy(dtype=float)


def heldout_by_dataset(rows: pd.DataFrame, edges, detector: str, fpr: float) -> pd.DataFrame:
    """Per data set, the FPR at target ``fpr`` measured on its held-out human texts, each text once at
    the longest bin it reaches (about its whole length), with its Clopper-Pearson interval."""
    table = bin_thresholds(rows, edges, detector, fpr).set_index("bin")["threshold"]
    held = (rows[rows["split"] == "heldout"].sort_values("bin", kind="stable")
            .groupby(["dataset", "pair"], sort=False).tail(1))
    out = []
    for name, g in held.groupby("dataset", sort=True):  # by name: the same order with every pandas version
        s = g[detector].to_numpy(dtype=float)
        ok = ~np.isnan(s)
        fp = int((s[ok] > table.reindex(g["bin"]).to_numpy(dtype=float)[ok]).sum())
        lo, hi = binomial_ci(fp, int(ok.sum()))
        out.append({"dataset": name, "detector": detector, "fpr_target": fpr, "n_heldout": int(ok.sum()),
                    "false_positives": fp, "fpr_heldout": fp / ok.sum() if ok.sum() else math.nan,
                    "fpr_low": lo, "fpr_high": hi})
    return pd.DataFrame(out)


def leave_one_source_out(rows: pd.DataFrame, matched: pd.DataFrame, edges, detectors,
                         fprs=(0.01, 0.05)) -> pd.DataFrame:
    """Calibrated decisions on each benchmark set with thresholds that never saw its generator.

    ``rows``: calibration rows of the human texts of every set (``calibration_rows``, with ``text_sha``;
    with a ``model`` column, the rows of the test text's model);
    ``matched``: length-matched scores (``detect.matched_length_scores``, with ``text_sha``). For a test
    set of generator ``G``, the thresholds come from the calibration-split rows of the sets of other
    generators, less any text that also appears in the test set; they are applied at each text's matched
    length to all of the test set's human (FPR) and machine (TPR) texts, with Clopper-Pearson intervals.
    """
    out = []
    for (model, name), g in matched.groupby(["model", "dataset"], sort=False):
        pool = rows[rows["model"] == model] if "model" in rows else rows
        pool = pool[(pool["split"] == "calibration") & (pool["dataset"].map(generator_of) != generator_of(name))]
        if "text_sha" in pool and "text_sha" in g:
            pool = pool[~pool["text_sha"].isin(set(g["text_sha"]))]
        human, machine = g[g["is_machine"] == 0], g[g["is_machine"] == 1]
        for d in detectors:
            for f in fprs:
                fp, tp = flag(pool, edges, human, d, f), flag(pool, edges, machine, d, f)
                flo, fhi = binomial_ci(int(fp.sum()), len(fp))
                tlo, thi = binomial_ci(int(tp.sum()), len(tp))
                out.append({"model": model, "dataset": name, "detector": d, "fpr_target": f,
                            "calibrated_on": ",".join(sorted(set(pool["dataset"]))), "n_human": len(fp),
                            "n_machine": len(tp), "fpr": fp.mean() if len(fp) else math.nan, "fpr_low": flo,
                            "fpr_high": fhi, "tpr": tp.mean() if len(tp) else math.nan, "tpr_low": tlo,
                            "tpr_high": thi})
    return pd.DataFrame(out)


def length_profile(rows: pd.DataFrame, edges, detectors, fpr: float = 0.05) -> pd.DataFrame:
    """Human scores against length: per detector and bin, the calibration rows' count, median and 5% /
    95% quantiles of the machine-oriented score, the threshold at ``fpr`` and the bin's mean length."""
    out = []
    for d in detectors:
        thr = bin_thresholds(rows, edges, d, fpr).set_index("bin")["threshold"]
        for i, g in rows[rows["split"] == "calibration"].groupby("bin"):
            v = g[d].dropna().to_numpy()
            q = np.quantile(v, [0.05, 0.5, 0.95]) if len(v) else [math.nan] * 3
            out.append({"detector": d, "bin": i, "n_tokens": float(g["n_tokens"].mean()), "n": len(v),
                        "q05": q[0], "median": q[1], "q95": q[2], "threshold": thr.get(i, math.nan)})
    return pd.DataFrame(out)
