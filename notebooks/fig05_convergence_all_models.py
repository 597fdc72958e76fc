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
# # Fig 5: convergence across all models
#
# The distributions of Fig 4 side by side for every model of the profile: final `D_n` (top) and
# final `z_n` with the N(0, 1) density (bottom), all runs under their sampling distribution `q`
# and the top-p runs under the raw `p`, with the run counts per model.
#
# The claim, for every model: under `q` most runs end within ±2σ (`|z_n| <= 2`); under the raw
# `p` of the top-p sampler the runs end below -2σ (over-typical), read as one sample: their pooled `z`
# (`tables.pooled_z`; the shares of a few short runs are printed, not claimed).

# %%
from aep_lib.report import figures

figures.setup_notebook()  # before the other imports: some warn as they load

import matplotlib.pyplot as plt
import numpy as np

import aep_lib.params
from aep_lib.analysis import tables
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
P = aep_lib.params.notebook_params("fig05_convergence_all_models", globals())
store = RunStore(store_dir(P.profile))
runs = tables.ensure_self_grid(store, P)
print(tables.describe_grid(runs))
finals = tables.final_table(store, runs)
under_q = finals[finals["dist"] == "samp"]
under_p = finals[(finals["dist"] == "raw") & (finals["setting"] == tables.TRUNCATED)]

# %%
d_all = np.concatenate([under_q["D"].to_numpy(dtype=float), under_p["D"].to_numpy(dtype=float)])
d_bins = np.linspace(np.nanmin(d_all) - 0.05, np.nanmax(d_all) + 0.05, 25)
z_all = np.concatenate([under_q["z"].to_numpy(dtype=float), under_p["z"].to_numpy(dtype=float)])
z_range = (min(-4.0, float(np.nanmin(z_all)) - 0.5), max(4.0, float(np.nanmax(z_all)) + 0.5))

fig, axes = plt.subplots(2, len(P.models), figsize=(4.2 * len(P.models), 6.6), squeeze=False, sharex="row")
for j, model in enumerate(P.models):
    q_m, p_m = under_q[under_q["model"] == model], under_p[under_p["model"] == model]
    for g, label, color, first in [(q_m, f"under q (n = {len(q_m)})", plots.H_COLOR, True),
                                   (p_m, f"top-p under p (n = {len(p_m)})", plots.L_COLOR, False)]:
        plots.plot_d_hist(axes[0, j], g["D"], bins=d_bins, color=color, label=label)
        plots.plot_z_hist(axes[1, j], g["z"], color=color, label=label, reference=first, z_range=z_range)
    axes[0, j].set_title(f"{plots.short_name(model)}: {len(q_m)} runs, {P.max_new_tokens} tokens")
    for ax in axes[:, j]:
        ax.set_ylim(top=ax.get_ylim()[1] * 1.3)  # room for the legend
    axes[0, j].legend(loc="upper left")
    if j:
        axes[0, j].set_ylabel("")
        axes[1, j].set_ylabel("")
axes[1, 0].legend(loc="upper left")
plots.finish(fig)

# %% [markdown]
# Shares of runs within ±1σ and ±2σ at the end, per model, setting and distribution (for the
# untruncated setting `q = p`, so only `q` is listed).

# %%
table = tables.share_table(finals[(finals["setting"] == tables.TRUNCATED) | (finals["dist"] == "samp")])
table["model"] = table["model"].map(plots.short_name)
print(table.round(2).to_string(index=False))

# %%
numbers, checks = {}, []
for model in P.models:
    name = plots.short_name(model)
    share_q = float(np.mean(np.abs(under_q.loc[under_q["model"] == model, "z"]) <= 2))
    share_p = float(np.mean(np.abs(under_p.loc[under_p["model"] == model, "z"]) <= 2))
    below = float(np.mean(under_p.loc[under_p["model"] == model, "z"] < -2))
    numbers |= {f"{name}: share |z| <= 2 under q": round(share_q, 2),
                f"{name}: share |z| <= 2 under p (top-p)": round(share_p, 2)}
    checks.append(figures.claim(f"{name}: share of runs with final |z| <= 2 under q", share_q, at_least=0.75))
    # the top-p runs under p read as one sample (tables.pooled_z): their shares are observed, a few short runs
    # beyond ±2 or not being one draw's luck
    mine = under_p[under_p["model"] == model]
    checks.append(figures.claim(f"{name}: pooled z of the top-p runs under p", tables.pooled_z(mine, runs),
                                at_most=-2, digits=1))
    figures.claim(f"{name}: share of top-p runs with final |z| <= 2 under p", share_p)
    figures.claim(f"{name}: share of top-p runs with final z < -2 under p", below)
print(f"all claims hold: {all(checks)}")

save_figure(fig, "fig05_convergence_all_models",
            caption=(f"Final D_n (top) and z_n (bottom) after {P.max_new_tokens} tokens for every model: all runs "
                     f"under their sampling distribution q, and the top-p {P.top_p:g} runs under the raw p. Under q "
                     "the z_n follow N(0, 1); under the raw p of the truncated sampler they lie far below -2."),
            numbers=numbers, run_ids=runs["run_id"].tolist())
