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
# # Fig 4: distribution of final entropy–perplexity differences
#
# For one model over many generations: the histogram of the final gap `D_n = l_n - h_n` and of
# the final typicality score `z_n = D_n / σ_n`, with the N(0, 1) density for `z` (docs/science.md).
# Every run is scored under the distribution it was sampled from (`q`); the top-p runs are also
# shown under the raw `p`, as the contrast.
#
# The claim: under `q` the final `D_n` centre on 0 and the final `z_n` look standard normal
# (most runs within ±2); under the raw `p` of the top-p sampler, `D_n < 0` and `z < -2` for the top-p runs
# read as one sample (their pooled `z`: a share of two short runs beyond -2 would be one draw's luck).

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
model = ""  # the model shown, one of models (empty: the first)

# %%
P = aep_lib.params.notebook_params("fig04_final_differences", globals())
store = RunStore(store_dir(P.profile))
runs = tables.ensure_self_grid(store, P)
print(tables.describe_grid(runs))
runs = runs[runs["model"] == P.shown_model]
finals = tables.final_table(store, runs)
name = plots.short_name(P.shown_model)
print(f"shown: {name}, {len(runs)} runs")

# %% [markdown]
# Three groups of final values: all runs under their sampling distribution `q` (untruncated and
# top-p alike), and the top-p runs under the raw `p`.

# %%
under_q = finals[finals["dist"] == "samp"]
under_p = finals[(finals["dist"] == "raw") & (finals["setting"] == tables.TRUNCATED)]
groups = [(under_q, f"all runs under q (n = {len(under_q)})", plots.H_COLOR),
          (under_p, f"top-p {P.top_p:g} runs under p (n = {len(under_p)})", plots.L_COLOR)]

fig, (ax_d, ax_z) = plt.subplots(1, 2, figsize=(10, 3.8))
d_all = np.concatenate([g["D"].to_numpy(dtype=float) for g, _, _ in groups])
d_bins = np.linspace(np.nanmin(d_all) - 0.05, np.nanmax(d_all) + 0.05, 25)
z_all = np.concatenate([g["z"].to_numpy(dtype=float) for g, _, _ in groups])
z_range = (min(-4.0, float(np.nanmin(z_all)) - 0.5), max(4.0, float(np.nanmax(z_all)) + 0.5))
for i, (g, label, color) in enumerate(groups):
    plots.plot_d_hist(ax_d, g["D"], bins=d_bins, color=color, label=label)
    plots.plot_z_hist(ax_z, g["z"], color=color, label=label, reference=(i == 0), z_range=z_range)
ax_d.set_title(f"{name}: final $D_n$ after {P.max_new_tokens} tokens")
ax_z.set_title(f"{name}: final $z_n$")
for ax in (ax_d, ax_z):
    ax.set_ylim(top=ax.get_ylim()[1] * 1.3)  # room for the legend
    ax.legend(loc="upper left")
plots.finish(fig)

# %% [markdown]
# The numbers the figure claims.

# %%
share_q = tables.share_table(under_q, by=["model"])["share_z2"].iloc[0]
share_p = float(np.mean(under_p["z"] < -2))
# the top-p runs under p read as one sample (tables.pooled_z): a few short runs beyond -2 or not is one draw's luck
checks = [
    figures.claim(f"{name}: share of runs with final |z| <= 2 under q", share_q, at_least=0.75),
    figures.claim(f"{name}: mean final D under q (bits/token)", under_q["D"].mean(), at_least=-0.25, at_most=0.25),
    figures.claim(f"{name}: pooled z of the top-p runs under p", tables.pooled_z(under_p, runs), at_most=-2,
                  digits=1),
    figures.claim(f"{name}: share of top-p runs with final z < -2 under p", share_p),  # observed
    figures.claim(f"{name}: mean final D of top-p runs under p (bits/token)", under_p["D"].mean(), at_most=-0.1),
]
print(f"all claims hold: {all(checks)}")

save_figure(fig, "fig04_final_differences",
            caption=(f"{name}: final D_n = l_n - h_n and z_n after {P.max_new_tokens} tokens for {len(under_q)} "
                     f"generations under their sampling distribution q (centred on 0, z close to N(0, 1)), and "
                     f"for the {len(under_p)} top-p {P.top_p:g} generations under the raw p (D_n < 0: over-typical)."),
            numbers={"model": P.shown_model, "runs under q": len(under_q), "share |z| <= 2 under q": round(share_q, 2),
                     "mean D under q": round(float(under_q["D"].mean()), 2),
                     "top-p runs under p": len(under_p), "share z < -2 under p": round(share_p, 2),
                     "mean D under p": round(float(under_p["D"].mean()), 2)},
            run_ids=runs["run_id"].tolist())
