"""The figures of detection and attribution: ROC curves of the detectors, a confusion matrix of attributions,
and the calibration's human scores against length, in the style and colours of ``plots``."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analysis.detect import machine_scores
from ..core.inference import auroc
from .plots import PALETTE, finish, log_axis


def plot_roc(scores: pd.DataFrame, detectors, model: str, datasets=None, ncols: int = 3):
    """ROC curves (one panel per dataset, one line per detector) of one scoring model; a matplotlib figure."""
    from sklearn.metrics import roc_curve

    sub = scores[scores["model"] == model]
    datasets = list(datasets or dict.fromkeys(sub["dataset"]))
    ncols = min(ncols, len(datasets))
    nrows = math.ceil(len(datasets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.9 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, datasets):
        g = sub[sub["dataset"] == name]
        oriented = machine_scores(g, detectors)
        for d in detectors:
            ok = oriented[d].notna()
            y, s = g.loc[ok, "is_machine"].to_numpy(), oriented.loc[ok, d].to_numpy()
            if len(set(y)) < 2:
                continue
            s = np.nan_to_num(s, posinf=1e300, neginf=-1e300)
            fpr, tpr, _ = roc_curve(y, s)
            a = auroc(s[y == 0], s[y == 1])
            ax.plot(fpr, tpr, lw=1.4, label=f"{d} ({a:.2f})")
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        ax.set(title=f"{name} ({len(g) // 2} pairs)", xlabel="false-positive rate (human called machine)",
               ylabel="true-positive rate")
        if ax.get_legend_handles_labels()[0]:  # no legend on a panel with nothing drawn
            ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis("off")
    finish(fig, f"ROC of the detectors, scorer {model}")
    return fig


def plot_confusion(matrix: pd.DataFrame, ax=None, title: str = ""):
    """A confusion matrix as a heatmap of row shares with the counts written in."""

    if ax is None:
        _, ax = plt.subplots(figsize=(1.1 * len(matrix) + 2.5, 1.0 * len(matrix) + 1.5))
    shares = matrix.div(matrix.sum(axis=1).replace(0, np.nan), axis=0)
    ax.imshow(shares.to_numpy(dtype=float), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(matrix)):
        for j in range(len(matrix.columns)):
            ax.text(j, i, int(matrix.iat[i, j]), ha="center", va="center",
                    color="white" if (shares.iat[i, j] or 0) > 0.6 else "black", fontsize=9)
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(matrix)), matrix.index, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true source", title=title)
    return ax


def plot_scores_by_length(rows: dict, profiles: dict, detectors, fpr: float, clt_level: float | None = None,
                          max_dots: int = 600):
    """Human texts' machine-oriented scores against their length (scored tokens, log axis): one row of
    panels per model, one column per detector (a matplotlib figure). Dots: calibration rows (a seeded
    sample of at most ``max_dots``); line: the
    bin medians with the 5-95% band; steps: the threshold at ``fpr`` per bin; dashed: the CLT level of
    ``fast_detectgpt`` (``clt_level``), which is not a level for human text.

    ``rows``: model -> ``calibration.rows_frame``; ``profiles``: model -> ``calibration.length_profile``.
    """
    from ..analysis.detect import DETECTORS

    models = list(rows)
    fig, axes = plt.subplots(len(models), len(detectors), figsize=(3.6 * len(detectors), 3.0 * len(models)),
                             squeeze=False)
    for r, model in enumerate(models):
        cal = rows[model][rows[model]["split"] == "calibration"]
        for c, d in enumerate(detectors):
            ax = axes[r, c]
            prof = profiles[model][profiles[model]["detector"] == d].sort_values("n_tokens")
            dots = cal.sample(min(len(cal), max_dots), random_state=0)
            ax.scatter(dots["n_tokens"], dots[d], s=3, alpha=0.2, color="0.5", rasterized=True)
            ax.fill_between(prof["n_tokens"], prof["q05"], prof["q95"], color=PALETTE[0], alpha=0.2, lw=0)
            ax.plot(prof["n_tokens"], prof["median"], color=PALETTE[0], lw=1.5, label="median, 5-95%")
            ax.step(prof["n_tokens"], prof["threshold"], where="mid", color=PALETTE[3], lw=1.3,
                    label=f"threshold at {fpr:g} FPR")
            if d == "fast_detectgpt" and clt_level is not None:
                ax.axhline(clt_level, color="black", ls="--", lw=0.9, label="CLT level")
            low, top = (int(cal["n_tokens"].min()), int(cal["n_tokens"].max())) if len(cal) else (16, 32)
            log_axis(ax, [t for t in (8, 16, 32, 64, 128, 256, 512, 1024, 2048) if low / 1.1 <= t <= top * 1.1])
            ax.set_xlim(low / 1.1, top * 1.1)
            ax.set_title(f"{model}: {d} ({DETECTORS[d].unit})", fontsize=9)
            ax.set_xlabel("scored tokens")
            if c == 0:
                ax.set_ylabel("machine-oriented score")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if len(models) < 2 else 0.03, 1, 1))
    return fig


# --- entropy rates (aep_lib.analysis.entropy_rate): calibration, adversarial prompts, the refined typical set ------
