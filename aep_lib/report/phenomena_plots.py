"""The figures of the notebooks on what was measured since the study (entropy-rate calibration, adversarial
prompts, the refined typical set), drawn in the style and model colours of ``plots``."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .plots import model_colors, short_name


def plot_entropy_calibration(running: pd.DataFrame, gap: pd.DataFrame, curve: pd.DataFrame, closing: pd.DataFrame,
                             rate_tokens: int):
    """Two panels (a matplotlib figure). (a) per model, the running entropy rate ``h_n`` of its own
    generations (``running``: ``entropy_rate.running_means`` rows of ``h_n``, mean with a 95% band)
    against ``n``, beside its log-perplexity on human text (``gap``: ``entropy_rate.calibration_gap``,
    dashed with its CI band); the dotted line marks ``rate_tokens``, where the gap is read. (b) the
    entropy rate against the sampling temperature (``curve``: ``entropy_rate.temperature_curve``, 95%
    CIs) with the same human levels, and the temperature where they meet (``closing``, a star)."""
    colors = model_colors(gap["model"])
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(11.5, 4.2))
    for r in gap.itertuples():
        c, name = colors[r.model], short_name(r.model)
        g = running[running["model"] == r.model]
        ax_a.plot(g["n"], g["mean"], color=c, lw=1.6, label=f"{name}: own text, $h_n$")
        ax_a.fill_between(g["n"], g["mean"] - g["half_width"], g["mean"] + g["half_width"], color=c, alpha=0.2, lw=0)
        for ax in (ax_a, ax_b):
            ax.axhline(r.l_human, color=c, ls="--", lw=1.2, label=f"{name}: human text, $l$" if ax is ax_a else None)
            ax.axhspan(r.l_low, r.l_high, color=c, alpha=0.08, lw=0)
        t = curve[curve["model"] == r.model]
        ax_b.errorbar(t["temperature"], t["h"], yerr=[t["h"] - t["low"], t["high"] - t["h"]], color=c, marker="o",
                      capsize=3, label=f"{name}: own text at T")
        star = closing[closing["model"] == r.model]
        if len(star) and np.isfinite(star["temperature"].iloc[0]):
            ax_b.plot(star["temperature"].iloc[0], r.l_human, marker="*", ms=14, color=c, ls="none",
                      label=f"{name}: gap closes, T = {star['temperature'].iloc[0]:.2f}")
    ax_a.axvline(rate_tokens, color="0.4", ls=":", lw=1)
    ax_a.set(xscale="log", xlabel="generated tokens $n$", ylabel="bits / token",
             title="(a) entropy rate of own text vs log-perplexity of human text")
    ax_b.set(xlabel="sampling temperature T", ylabel="bits / token",
             title=f"(b) entropy rate over the first {rate_tokens} tokens against T")
    ax_a.legend(loc="best", fontsize=7)
    ax_b.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    return fig


def plot_adversarial_prompts(per_text: pd.DataFrame, accuracy: pd.DataFrame, order, models):
    """Three panels (a matplotlib figure), one column of points per prompt group of ``order``:
    (a) the final ``z`` of every text under its own ``q`` with the ±2 band of N(0, 1); (b) ``z`` of the same
    texts under the other model's ``q``, one colour per source model; (c) attribution accuracy per prompt
    group (``accuracy``: ``attribution.accuracy_by`` rows with ``method``, ``prompt_group``; Clopper-Pearson
    95% intervals). ``per_text``: ``entropy_rate.cross_view`` rows with ``prompt_group``."""
    colors = model_colors(models)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    x = {g: i for i, g in enumerate(order)}
    offsets = np.linspace(-0.15, 0.15, len(models))
    for ax, column, title in ((axes[0], "z_own_q", "(a) z under its own q"),
                              (axes[1], "z_other_q", "(b) z under the other model's q")):
        for off, model in zip(offsets, models):
            g = per_text[per_text["model"] == model]
            ax.scatter(g["prompt_group"].map(x) + off, g[column], s=18, color=colors[model], alpha=0.8,
                       label=f"text by {short_name(model)}")
        ax.axhspan(-2, 2, color="0.85", zorder=-2, lw=0)
        ax.axhline(0, color="0.4", lw=0.7)
        ax.set_title(title)
        ax.set_ylabel("final z")
    for off, (method, g) in zip((-0.08, 0.08), accuracy.groupby("method", sort=False)):
        xs = g["prompt_group"].map(x) + off
        axes[2].errorbar(xs, g["accuracy"], yerr=[g["accuracy"] - g["low"], g["high"] - g["accuracy"]], marker="o",
                         ls="none", capsize=3, label=method)
    axes[2].axhline(1 / len(models), color="0.6", ls=":", lw=0.8, label="chance")
    axes[2].set(ylim=(-0.05, 1.05), ylabel="attribution accuracy", title="(c) which model wrote it?")
    for ax in axes:
        ax.set_xticks(range(len(order)), list(order), rotation=20)
        ax.set_xlim(-0.5, len(order) - 0.5)
    axes[0].legend(loc="lower left", fontsize=7)
    axes[2].legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return fig


def plot_relative_typical_set(per_run: pd.DataFrame, relative: pd.DataFrame, models):
    """Two panels (a matplotlib figure). (a) the entropy per byte of each model's own text at common byte
    lengths ``N`` (``per_run``: ``entropy_rate.at_byte_lengths`` rows; mean over runs, band: their range);
    (b) log2 of each model's typical-set size relative to the other's, ``N (h_A - h_B)`` (``relative``:
    ``entropy_rate.relative_typical_set`` rows, band: 95% CI), against ``N``."""
    colors = model_colors(models)
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(11.5, 4.2))
    for model in models:
        g = per_run[per_run["model"] == model].groupby("N")["h_byte"].agg(["mean", "min", "max"]).reset_index()
        ax_a.plot(g["N"], g["mean"], color=colors[model], lw=1.6, label=short_name(model))
        ax_a.fill_between(g["N"], g["min"], g["max"], color=colors[model], alpha=0.2, lw=0)
    for (a, b), g in relative.groupby(["model", "other"], sort=False):
        ax_b.plot(g["N"], g["log2_relative"], color=colors[a], lw=1.6,
                  label=f"{short_name(a)} relative to {short_name(b)}")
        ax_b.fill_between(g["N"], g["low"], g["high"], color=colors[a], alpha=0.2, lw=0)
    ax_b.axhline(0, color="0.4", lw=0.7)
    ax_a.set(xlabel="text length N (UTF-8 bytes)", ylabel="entropy per byte $h$ (bits/byte)",
             title="(a) entropy rate of own text, per byte")
    ax_b.set(xlabel="text length N (UTF-8 bytes)", ylabel="$N (h_A - h_B)$ (bits)",
             title="(b) log$_2$ |typical set of A| / |plausible to B|")
    ax_a.legend(loc="best")
    ax_b.legend(loc="best")
    fig.tight_layout()
    return fig
