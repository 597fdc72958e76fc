# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Entropy rate against length: does the per-token entropy drift as a generation goes on?
#
# Cao, Valiant & Liang, "On the Entropy Calibration of Language Models" (arXiv 2511.11966) report that the
# per-step entropy of a model's own generations grows with the generation's length (error accumulation),
# and that larger models (0.5B to 70B parameters) accumulate it at a similar rate (numbers: see the paper). Here:
# the per-position entropy `H_t` (docs/science.md; `t = 1` is the first generated token) of the
# self-convergence grid's runs — the same runs as `fig01_self_convergence` (equal grid values share
# them) — averaged in log-spaced position bins, per model and sampling setting: the untruncated runs
# (`q = p`) and the top-p runs, under their sampling distribution `q` and under the raw `p`. Per run, the
# slope of `H_t` in bits per doubling of `t` (a least-squares line through the bin means against
# `log2 t`) and in bits per 1,000 tokens (through every position); per group, the mean slope with a 95%
# bootstrap CI over runs and the verdict: **grows** (CI above 0), **falls** (below) or **flat**. These
# are observations, not bounds. The tables come from `aep_lib.analysis.dynamics` (`entropy_profile`,
# `entropy_slope_table`, `slope_summary`).

# %%
from aep_lib.report import figures

figures.setup_notebook()  # before the other imports: some warn as they load

import matplotlib.pyplot as plt
import pandas as pd

import aep_lib.params
from aep_lib.analysis import dynamics, tables
from aep_lib.paths import store_dir
from aep_lib.report import plots
from aep_lib.report.figures import save_figure
from aep_lib.store.run_store import RunStore

# %% tags=["parameters"]
profile = "cpu"  # params profile this execution belongs to (cpu or paper)
models = "smollm2-135m,gemma-3-270m"  # comma-separated model names: embedded short names, hub ids or folders
prompts = "p01,p02"  # comma-separated prompt ids from params/prompts.yaml
n_seeds = 3  # generations per model and prompt at temperature 1 without truncation
n_seeds_truncated = 1  # generations per model and prompt with top-p truncation
top_p = 0.9  # nucleus mass of the truncated setting
max_new_tokens = 192  # length of every generation, in tokens
batch_size = 24  # sequences generated together (both settings of a model in one batch)
device = "auto"  # torch device: auto, cpu, cuda, cuda:1, ...
dtype = "auto"  # model dtype: auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16
n_bins = 10  # log-spaced position bins from the first to the last generated token
n_resamples = 1000  # bootstrap resamples of the runs for each slope's CI

# %%
P = aep_lib.params.notebook_params("entropy_rate_drift", globals())
store = RunStore(store_dir(P.profile))
runs = tables.ensure_self_grid(store, P)
print(tables.describe_grid(runs))
edges = dynamics.position_bins(P.max_new_tokens, P.n_bins)
profile_ = dynamics.entropy_profile(store, runs, edges)
slopes = dynamics.entropy_slope_table(store, runs, edges)
print(f"{len(edges) - 1} position bins, edges {edges.tolist()}")

# %% [markdown]
# Per model: the mean `H_t` per position bin (± 1 standard error over runs) against the position, for the
# untruncated runs under `q` (their `p` differs from `q` only by the suppressed end-of-text token) and
# the top-p runs under `q` and under the raw `p`.

# %%
GROUPS = [(tables.MAIN, "samp", "t = 1, under q", plots.H_COLOR),
          (tables.TRUNCATED, "samp", f"top-p {P.top_p:g}, under q", plots.Q_COLOR),
          (tables.TRUNCATED, "raw", f"top-p {P.top_p:g}, under p", plots.P_COLOR)]
means = dynamics.profile_means(profile_, ["model", "setting", "dist"])
fig, axes = plt.subplots(1, len(P.models), figsize=(5.2 * len(P.models), 3.8), squeeze=False, sharey=True)
for ax, model in zip(axes[0], P.models):
    for setting, dist, label, color in GROUPS:
        g = means[(means["model"] == model) & (means["setting"] == setting) & (means["dist"] == dist)]
        ax.plot(g["t_mid"], g["H"], marker="o", ms=3, color=color, label=label)
        ax.fill_between(g["t_mid"], g["H"] - g["se"], g["H"] + g["se"], color=color, alpha=0.15, lw=0)
    plots.log_axis(ax)
    ax.set_xlabel("position t (generated tokens)")
    ax.set_title(plots.short_name(model))
    ax.legend(loc="upper left")
axes[0, 0].set_ylabel("mean entropy H_t (bits)")
fig.tight_layout()

# %% [markdown]
# Per model, setting and distribution: the mean slope over runs with its 95% bootstrap CI, in bits per
# doubling of the position and in bits per 1,000 tokens, and the verdict of each.

# %%
drift = dynamics.drift_table(slopes, ["model", "setting", "dist"], n_resamples=P.n_resamples)
for r in drift.itertuples():
    print(f"{r.model:<14} {r.setting:<9} under {'q' if r.dist == 'samp' else 'p'} ({r.n_runs} runs): H first bin "
          f"{r.H_first:.2f}, last bin {r.H_last:.2f} bits; per doubling "
          f"{figures.format_interval(r.doubling, r.doubling_low, r.doubling_high, 3)} -> {r.doubling_verdict}; "
          f"per 1,000 tokens {figures.format_interval(r.per_1k, r.per_1k_low, r.per_1k_high)} -> {r.per_1k_verdict}")

shown = drift.set_index(["model", "setting", "dist"])
for setting, dist, label, _ in GROUPS:
    for model in P.models:
        r = shown.loc[(model, setting, dist)]
        figures.claim(f"{model}, {label}: slope of H_t, bits per doubling of t ({r['doubling_verdict']})",
                     r["doubling"], digits=3)
save_figure(fig, "entropy_rate_drift",
            caption=(f"Mean per-position entropy H_t in {len(edges) - 1} log-spaced position bins of "
                     f"{P.max_new_tokens}-token self-generated runs (± 1 se over runs), per model: untruncated "
                     f"runs under q, top-p {P.top_p:g} runs under q and under the raw p."),
            numbers={f"{r.model}:{r.setting}:{r.dist}:bits per doubling": round(float(r.doubling), 3)
                     for r in drift.itertuples()}
            | {f"{r.model}:{r.setting}:{r.dist}:verdict": r.doubling_verdict for r in drift.itertuples()},
            run_ids=runs["run_id"].tolist())

# %% [markdown]
# ## Against the source
#
# Cao, Valiant & Liang state that the entropy grows with length; their numbers are for their models
# and lengths: "see the paper". Here, per model: the verdict of the slope per doubling for each group.

# %%
comparison = pd.DataFrame([{"group": label, **{plots.short_name(m): shown.loc[(m, s, d), "doubling_verdict"]
                                                for m in P.models},
                            "Cao, Valiant & Liang": "grows (numbers: see the paper)"} for s, d, label, _ in GROUPS])
print(comparison.to_string(index=False))
