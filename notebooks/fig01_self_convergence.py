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
# # Fig 1: long-sequence convergence
#
# One self-generated sequence per model (the first prompt, seed 0): the running log-perplexity
# `l_n` and the running entropy `h_n` against the position `n`, with the bands `h_n ± σ_n` and
# `h_n ± 2σ_n` (docs/science.md). Three panels per model:
#
# - the untruncated sampler (temperature 1, `q = p` up to the suppressed end-of-text token);
# - a top-p sampler, under its sampling distribution `q`;
# - the same top-p text under the raw distribution `p`.
#
# The claim: under the distribution the text was sampled from, `l_n` stays within the bands of `h_n`;
# under the raw `p` of a truncated sampler the text is over-typical: `l_n` falls below `h_n` by more than
# 2σ. One trace is shown per panel; the claims read every run of the panel's setting as one sample.

# %%
from aep_lib.report import figures

figures.setup_notebook()  # before the other imports: some warn as they load

import matplotlib.pyplot as plt

import aep_lib.params
from aep_lib.analysis import tables
from aep_lib.core import stats
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

# %%
P = aep_lib.params.notebook_params("fig01_self_convergence", globals())
store = RunStore(store_dir(P.profile))
runs = tables.ensure_self_grid(store, P)
print(tables.describe_grid(runs))

# %% [markdown]
# The shown sequences: per model, seed 0 of the first prompt in each setting.

# %%
shown = runs[(runs["prompt_id"] == P.prompts[0]) & (runs["seed"] == 0)]
panels = [(tables.MAIN, "samp", "temperature 1: q = p"),
          (tables.TRUNCATED, "samp", f"top-p {P.top_p:g}, under q"),
          (tables.TRUNCATED, "raw", f"top-p {P.top_p:g}, under p (raw)")]
traces = {}
for setting, dist, _ in panels:
    ids = shown.loc[shown["setting"] == setting, "run_id"]
    table = tables.running_table(store, shown[shown["run_id"].isin(ids)], dist=dist)
    for model, g in table.groupby("model", sort=False):
        traces[model, setting, dist] = g

fig, axes = plt.subplots(len(P.models), len(panels), figsize=(4.2 * len(panels), 3.3 * len(P.models)),
                         squeeze=False, sharex=True, sharey="row")
for i, model in enumerate(P.models):
    for j, (setting, dist, label) in enumerate(panels):
        ax = axes[i, j]
        plots.plot_running(ax, traces[model, setting, dist], title=f"{plots.short_name(model)}: {label}")
        if i < len(P.models) - 1:
            ax.set_xlabel("")
        if j:
            ax.set_ylabel("")
axes[0, 0].legend(loc="upper right")
plots.finish(fig)

# %% [markdown]
# The numbers of the shown traces (observed: one trace's final `z_n` beyond ±2 is a 1-in-20 draw even where
# the AEP holds), and what the figure claims, read over every run of the grid of each panel as one sample
# (`tables.pooled_z`: their summed `l - h` over the root of their summed varentropies, N(0, 1) where the
# runs are typical): within ±3 under `q` (a 0.3% false alarm per claim), at most -2 under the raw `p` of the
# top-p sampler (over-typical). Shares of positions `n >= 16` within ±2σ (the first few carry little
# information either way).

# %%
BURN_IN = 15
finals = tables.final_table(store, runs)
numbers, checks = {}, []
for model in P.models:
    name = plots.short_name(model)
    for setting, dist, label in panels:
        t = traces[model, setting, dist]
        z_final = float(t["z_n"].iloc[-1])
        share = stats.share_within(t["z_n"], 2, BURN_IN)
        key = f"{name} {setting} {dist}"
        numbers[f"{key}: final z"] = round(z_final, 2)
        numbers[f"{key}: share of positions within 2 sigma"] = round(share, 2)
        figures.claim(f"{key}: shown trace, final z", z_final, digits=1)
        figures.claim(f"{key}: shown trace, share of positions n >= 16 with |z_n| <= 2", share)
        group = finals[(finals["model"] == model) & (finals["setting"] == setting) & (finals["dist"] == dist)]
        pooled = tables.pooled_z(group, runs)
        numbers[f"{key}: pooled z of the {len(group)} runs"] = round(pooled, 2)
        if dist == "samp":
            checks.append(figures.claim(f"{key}: pooled |z| of the {len(group)} runs", abs(pooled), at_most=3,
                                        digits=1))
        else:
            checks.append(figures.claim(f"{key}: pooled z of the {len(group)} runs (over-typical)", pooled, at_most=-2,
                                        digits=1))
print(f"all claims hold: {all(checks)}")

save_figure(fig, "fig01_self_convergence",
            caption=(f"Running log-perplexity l_n and entropy h_n with h_n ± σ_n and ± 2σ_n bands for one "
                     f"{P.max_new_tokens}-token sequence per model (prompt {P.prompts[0]}, seed 0): untruncated "
                     f"sampling (q = p), and top-p {P.top_p:g} sampling under q and under the raw p. Under the "
                     "sampling distribution l_n stays within the bands; under the raw p of the truncated sampler "
                     "it falls below them (over-typical)."),
            numbers=numbers, run_ids=shown["run_id"].tolist())
