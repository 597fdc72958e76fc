"""Plotting helpers shared by the notebooks: one style, one colour per model, the recurring panels.

Each helper draws on a given matplotlib ``ax`` and returns it; none calls ``plt.show`` or picks a
backend, so they work inline in Jupyter, under papermill and with Agg. Quantities are in bits
(docs/science.md); ``n`` is the number of continuation tokens.

    set_style()
    fig, ax = plt.subplots()
    plot_running(ax, running_of_one_run)          # l_n, h_n with h_n ± 1σ, ± 2σ bands
    plot_z_hist(ax, finals["z"])                  # histogram of final z with the N(0,1) reference
    plot_final_scatter(ax, finals["h"], finals["l"])  # final entropy vs log-perplexity, diagonal
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

L_COLOR = "#c0392b"  # log-perplexity l_n
H_COLOR = "#2c3e50"  # entropy h_n and its bands; runs under q = p
Q_COLOR = "#2e86c1"  # truncated runs under their sampling distribution q
P_COLOR = L_COLOR  # truncated runs under the raw p
BAND_ALPHA = (0.28, 0.12)  # ±1σ, ±2σ
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
DIST_STYLE = {"samp": {"marker": "o", "label": "under q"}, "raw": {"marker": "x", "label": "under p"}}


def set_style(context: str = "paper") -> None:
    """The project's figure style (seaborn whitegrid, readable font sizes).

    Inline figures at 72 dpi keep the committed notebooks small; ``save_figure`` writes 150 dpi.
    """
    import seaborn as sns

    sns.set_theme(context=context, style="whitegrid", font_scale=1.1)
    # A legend that lands on lines or bands stays readable: a white, slightly see-through box, no edge.
    mpl.rcParams.update({"figure.dpi": 72, "savefig.dpi": 150, "axes.titlesize": "medium",
                         "legend.fontsize": "small", "legend.frameon": True, "legend.framealpha": 0.85,
                         "legend.facecolor": "white", "legend.edgecolor": "none"})


def log_axis(ax, ticks=None, axis: str = "x"):
    """A log-scale ``axis`` ("x" or "y") labelled in plain numbers (``16 32 64``, ``1 10 100``), never
    ``3×10¹``: major ticks at ``ticks`` (default: matplotlib's decades), no labels on the minor ticks
    (on a log axis spanning less than a decade matplotlib labels them, on top of the major ones)."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    if ticks is not None:
        ticks = sorted({float(t) for t in ticks})
        target.set_major_locator(mpl.ticker.FixedLocator(ticks))
        target.set_minor_locator(mpl.ticker.NullLocator())
    target.set_major_formatter(mpl.ticker.FuncFormatter(_plain_number))
    target.set_minor_formatter(mpl.ticker.NullFormatter())
    return ax


def _plain_number(value: float, _pos=None) -> str:
    return f"{value:g}" if 1e-4 <= abs(value) < 1e6 else f"{value:.0e}"


def short_name(model: str) -> str:
    """A label for a model: the last path component of a hub id or folder."""
    return str(model).rstrip("/").split("/")[-1]


def model_colors(models) -> dict[str, str]:
    """One fixed colour per model, in the order given."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(dict.fromkeys(models))}


def label_against_n(ax, ylabel: str, log_x: bool = True, title: str | None = None):
    """Label a panel drawn against the token count ``n`` (log-scaled with plain tick labels if ``log_x``)."""
    if log_x:
        log_axis(ax)
    ax.set_xlabel("tokens $n$")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return ax


def plot_running(ax, run, bands=(1, 2), log_x: bool = True, label_l: str = "log-perplexity $l_n$",
                 label_h: str = "entropy $h_n$", title: str | None = None):
    """``l_n`` and ``h_n`` against ``n`` for one run, with ``h_n ± k·sigma_n`` bands for ``k`` in ``bands``.

    ``run``: a table with columns ``n, l_n, h_n, sigma_n`` (one run, e.g. from ``running_stats``).
    """
    n = np.asarray(run["n"], dtype=float)
    h = np.asarray(run["h_n"], dtype=float)
    sigma = np.asarray(run["sigma_n"], dtype=float)
    for k, alpha in sorted(zip(bands, BAND_ALPHA), reverse=True):
        ax.fill_between(n, h - k * sigma, h + k * sigma, color=H_COLOR, alpha=alpha, lw=0, label=f"$h_n \\pm {k}\\sigma_n$")
    ax.plot(n, h, color=H_COLOR, lw=1.2, label=label_h)
    ax.plot(n, np.asarray(run["l_n"], dtype=float), color=L_COLOR, lw=1.0, label=label_l)
    return label_against_n(ax, "bits per token", log_x, title)


def plot_z_trajectories(ax, running, color=None, alpha: float = 0.35, log_x: bool = True, title: str | None = None,
                        label: str | None = None):
    """``z_n`` against ``n``, one thin line per run, with the ±1 and ±2 lines.

    ``running``: columns ``run_id, n, z_n`` (several runs).
    """
    for i, (_, g) in enumerate(running.groupby("run_id", sort=False)):
        ax.plot(g["n"], g["z_n"], color=color or H_COLOR, lw=0.7, alpha=alpha, label=None if i else label)
    for k, ls in ((1, ":"), (2, "--")):
        ax.axhline(k, color="k", lw=0.8, ls=ls)
        ax.axhline(-k, color="k", lw=0.8, ls=ls)
    ax.axhline(0, color="k", lw=0.5)
    return label_against_n(ax, "$z_n = D_n / \\sigma_n$", log_x, title)


def _bins(values, bins):
    if not isinstance(bins, int):
        return bins
    lo, hi = np.nanmin(values), np.nanmax(values)
    if not np.isfinite(lo) or not np.isfinite(hi) or lo == hi:
        return bins
    return np.linspace(lo, hi, bins + 1)


def z_bins(z_range: tuple[float, float], width: float = 0.5) -> np.ndarray:
    """Bin edges of ``width`` covering ``z_range``, with an edge at 0 (so ±1, ±2 are edges too)."""
    lo = np.floor(z_range[0] / width) * width
    hi = np.ceil(z_range[1] / width) * width
    return np.arange(lo, hi + width / 2, width)


def plot_z_hist(ax, z, width: float = 0.5, color=None, label: str | None = None, reference: bool = True,
                z_range: tuple[float, float] | None = None, density: bool = False, alpha: float = 0.55):
    """Histogram of final ``z`` values with the standard normal reference (``reference``).

    Counts by default, and the N(0, 1) curve scaled to the expected count of ``len(z)`` runs per bin
    of ``width``; ``density=True`` draws densities and the plain N(0, 1) density. Infinite and NaN
    values are left out of the histogram (count them separately). ``z_range``: the x-range of the
    bins (default: the data, and at least ``[-4, 4]``).
    """
    z = np.asarray(z, dtype=float)
    z = z[np.isfinite(z)]
    lo, hi = z_range or (min(-4.0, float(z.min()) if len(z) else -4.0), max(4.0, float(z.max()) if len(z) else 4.0))
    edges = z_bins((lo, hi), width)
    if len(z):
        ax.hist(z, bins=edges, density=density, color=color or H_COLOR, alpha=alpha, label=label,
                edgecolor="white", linewidth=0.5)
    if reference:
        x = np.linspace(edges[0], edges[-1], 400)
        scale = 1.0 if density else max(len(z), 1) * width
        ax.plot(x, scale * stats.norm.pdf(x), color="k", lw=1.2,
                label="N(0, 1)" if density else f"N(0, 1), {len(z)} runs")
    for k in (-2, 2):
        ax.axvline(k, color="k", lw=0.7, ls="--")
    ax.set_xlabel("final $z_n$")
    ax.set_ylabel("density" if density else "runs")
    if not density:
        ax.yaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    return ax


def plot_d_hist(ax, d, bins=20, color=None, label: str | None = None, alpha: float = 0.5):
    """Histogram (counts) of final differences ``D_n = l_n - h_n`` (bits/token), with a line at 0."""
    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d)]
    if len(d):
        ax.hist(d, bins=_bins(d, bins), color=color or H_COLOR, alpha=alpha, label=label, edgecolor="white",
                linewidth=0.5)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("final $D_n = l_n - h_n$ (bits/token)")
    ax.set_ylabel("runs")
    ax.yaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    return ax


def plot_final_scatter(ax, h, l, color=None, label: str | None = None, marker: str = "o", diagonal: bool = True,
                       sigma=None, k: float = 2.0, **kwargs):
    """Final entropy ``h`` (x) against final log-perplexity ``l`` (y), one point per run, with ``l = h``.

    ``sigma``: each run's final ``sigma_n``; draws ``l ± k·sigma`` error bars (a point is within
    ``±k σ`` of the diagonal iff its bar crosses it).
    """
    h = np.asarray(h, dtype=float)
    l = np.asarray(l, dtype=float)
    if sigma is not None and len(h):
        ax.errorbar(h, l, yerr=k * np.asarray(sigma, dtype=float), fmt="none", ecolor=color, elinewidth=0.8,
                    alpha=0.6)
    ax.scatter(h, l, color=color, label=label, marker=marker, s=kwargs.pop("s", 28), alpha=kwargs.pop("alpha", 0.8),
               **kwargs)
    if diagonal:
        add_diagonal(ax)
    ax.set_xlabel("final entropy $h_n$ (bits/token)")
    ax.set_ylabel("final log-perplexity $l_n$ (bits/token)")
    return ax


def add_diagonal(ax, color: str = "k"):
    """The line ``y = x`` across the current limits of ``ax`` (limits made equal on both axes)."""
    lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
    hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
    for line in [ln for ln in ax.get_lines() if ln.get_gid() == "diagonal"]:
        line.remove()
    ax.plot([lo, hi], [lo, hi], color=color, lw=0.8, ls="--", gid="diagonal", zorder=0)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    return ax


def plot_sigma_decay(ax, running, color=None, alpha: float = 0.35, reference: bool = True, title: str | None = None,
                     label: str | None = None):
    """``sigma_n`` against ``n`` on log-log axes, one line per run, with a ``c/sqrt(n)`` reference.

    ``running``: columns ``run_id, n, sigma_n``. The reference passes through the median ``sigma_n``
    at the largest ``n``.
    """
    for i, (_, g) in enumerate(running.groupby("run_id", sort=False)):
        ax.plot(g["n"], g["sigma_n"], color=color or H_COLOR, lw=0.7, alpha=alpha, label=None if i else label)
    if reference and len(running):
        n_max = running["n"].max()
        c = float(np.median(running.loc[running["n"] == n_max, "sigma_n"])) * np.sqrt(n_max)
        n = np.geomspace(1, n_max, 50)
        ax.plot(n, c / np.sqrt(n), color="k", lw=1.0, ls="--", label="$\\propto 1/\\sqrt{n}$")
    log_axis(ax)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(mpl.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(mpl.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    return label_against_n(ax, "$\\sigma_n$ (bits/token)", False, title)


def finish(fig, title: str | None = None) -> None:
    """Suptitle and a tight layout.

    Returns nothing on purpose: a notebook cell ending with ``finish(fig)`` then shows the figure
    once (the inline backend's), even where ``;`` does not suppress the cell's value (nbval).
    """
    text = fig.suptitle(title) if title else None
    fig.tight_layout()
    if text is not None:
        # tight_layout can leave the suptitle touching the panels' titles (matplotlib's default style):
        # then fit the panels below it, 10 points lower
        renderer = fig.canvas.get_renderer()
        limit = text.get_window_extent(renderer).y0 - 10 * fig.dpi / 72
        top = max((ax.get_tightbbox(renderer).y1 for ax in fig.axes if ax.axison), default=0)
        if top > limit:
            fig.subplots_adjust(top=fig.subplotpars.top - (top - limit) / fig.bbox.height)


def close(fig) -> None:
    """Close a figure after saving it (notebooks display it first)."""
    plt.close(fig)


# --- cross-model: one model's text under another ---------------------------------------------------

OTHER_COLOR = "#d95f02"  # scorer B on another model's (A's) text
OWN_COLOR = "#1b9e77"  # scorer B on its own text (the self case)
CROSS_COLOR = "#7570b3"  # the cross-entropy h^(A,B)


def plot_regime_histogram(ax, records, column: str, low_below: float, high_above: float, bins: int = 20,
                          xlabel: str | None = None):
    """Stacked histogram (counts) of ``records[column]`` by ``records["pair"]``, with the low / mid / high
    regimes (``< low_below``, between, ``> high_above``) shaded and labelled."""
    v = np.asarray(records[column], dtype=float)
    v = v[np.isfinite(v)]
    lo, hi = min(float(v.min()) if len(v) else low_below, low_below), max(float(v.max()) if len(v) else high_above, high_above)
    edges = np.linspace(lo - 0.1, hi + 0.1, bins + 1)
    pairs = sorted(records["pair"].unique())
    if pairs:
        ax.hist([np.asarray(records.loc[records["pair"] == p, column], dtype=float) for p in pairs], bins=edges,
                stacked=True, label=pairs, alpha=0.85, color=PALETTE[: len(pairs)] if len(pairs) <= len(PALETTE) else None)
    ax.axvspan(edges[0], low_below, color="#e5f5e0", zorder=-1)
    ax.axvspan(high_above, edges[-1], color="#fee0d2", zorder=-1)
    for x in (low_below, high_above):
        ax.axvline(x, color="k", lw=0.8, ls="--")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.15)
    top = ax.get_ylim()[1]
    for x, text in ((0.5 * (edges[0] + low_below), f"low (< {low_below:g})"), (0.5 * (low_below + high_above), "mid"),
                    (0.5 * (high_above + edges[-1]), f"high (> {high_above:g})")):
        ax.text(x, 0.98 * top, text, ha="center", va="top", fontsize=9)
    ax.set_xlabel(xlabel or column)
    ax.set_ylabel("comparisons")
    ax.yaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    return ax


def rolling_mean(values, window: int) -> np.ndarray:
    """Trailing rolling mean over ``window`` positions (over fewer at the start)."""
    v = np.asarray(values, dtype=float)
    c = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(1, len(v) + 1)
    lo = np.maximum(i - window, 0)
    return (c[i] - c[lo]) / (i - lo)


def plot_position_profile(ax, tokens, window: int, columns=("surprisal", "entropy"),
                          colors=(L_COLOR, H_COLOR), labels=("surprisal $s_t$", "entropy $H_t$")) -> dict:
    """Per position, the mean over runs of each of ``columns`` after a rolling mean over ``window`` positions,
    with a ±1 standard-error band across runs. ``tokens``: columns ``run_id, position`` and ``columns``.
    Returns ``{column: curve}`` (the plotted means, position 0 first)."""
    curves = {}
    for col, color, label in zip(columns, colors, labels):
        wide = tokens.pivot_table(index="position", columns="run_id", values=col)
        smooth = np.column_stack([rolling_mean(wide[c].dropna(), window).tolist()
                                  + [np.nan] * (len(wide) - wide[c].notna().sum()) for c in wide.columns])
        mean = np.nanmean(smooth, axis=1)
        count = np.sum(np.isfinite(smooth), axis=1)
        se = np.where(count > 1, np.nanstd(smooth, axis=1, ddof=1) / np.sqrt(np.maximum(count, 1)), 0.0)
        x = wide.index.to_numpy() + 1
        ax.fill_between(x, mean - se, mean + se, color=color, alpha=0.2, lw=0)
        ax.plot(x, mean, color=color, lw=1.4, label=f"{label}, mean over {wide.shape[1]} texts")
        curves[col] = mean
    ax.set_xlabel("position $t$ (tokens)")
    ax.set_ylabel(f"bits (rolling mean over {window} tokens)")
    return curves


# --- detection and attribution ----------------------------------------------------------------------



def plot_ci_heatmaps(cells: pd.DataFrame, titles: dict[str, str], index, columns, row: str = "model",
                     column: str = "setting", shares=()):
    """One heatmap per metric (stacked vertically; a matplotlib figure): the mean of every (``row``,
    ``column``) cell written in with its CI in brackets.

    ``cells``: ``tables.group_cis`` rows (``row, column, metric, mean, low, high``); ``titles``: metric ->
    panel title, in panel order; ``index`` / ``columns``: the rows and columns of each heatmap, in order.
    Metrics in ``shares`` (values in [0, 1]) use a sequential colour map on [0, 1]; the others a diverging
    one, symmetric around 0 and spanning at least ±2.
    """
    index, columns = list(index), list(columns)
    fig, axes = plt.subplots(len(titles), 1, figsize=(1.6 * len(columns) + 3, 1.0 * len(index) * len(titles) + 2.5),
                             squeeze=False)
    for ax, key in zip(axes[:, 0], titles):
        sub = cells[cells["metric"] == key]
        grid, lo, hi = (sub.pivot(index=row, columns=column, values=v).reindex(index=index, columns=columns)
                        for v in ("mean", "low", "high"))
        share = key in shares
        vmax = 1.0 if share else max(2.0, float(np.nanmax(np.abs(grid.to_numpy()))))
        ax.imshow(grid.to_numpy(dtype=float), cmap="viridis" if share else "RdBu_r", vmin=0 if share else -vmax,
                  vmax=vmax, aspect="auto")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                ax.text(j, i, f"{grid.iat[i, j]:+.2f}\n[{lo.iat[i, j]:+.1f}, {hi.iat[i, j]:+.1f}]", ha="center",
                        va="center", fontsize=7)
        ax.set_xticks(range(len(columns)), columns)
        ax.set_yticks(range(len(index)), index, fontsize=8)
        ax.set_title(titles[key], fontsize=9)
    fig.tight_layout()
    return fig
