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
# # Fig 9: diagnostic view of one model's runs
#
# Four panels for one model: (a) the trajectories `z_n` of every run, (b) the distribution of the
# final differences `D_n`, (c) the decay of the running standard error `σ_n` against the `1/√n`
# reference, (d) per run, the share of positions within ±2σ. Untruncated runs (`q = p`) in dark,
# top-p runs under their `q` in blue and under the raw `p` in red.
#
# The claims: `σ_n` decays like `n^(-1/2)` (fitted log-log slope near -0.5); under `q` the typical
# run spends most positions within ±2σ; under the raw `p` of the top-p sampler the runs, read as one
# sample (their pooled `z`), lie below -2σ.

# %%
from aep_lib.report import figures

figures.setup_notebook()  # before the other imports: some warn as they load

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

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
model = ""  # the model shown, one of models (empty: the first)

# %%
P = aep_lib.params.notebook_params("fig09_diagnostics", globals())
store = RunStore(store_dir(P.profile))
runs = tables.ensure_self_grid(store, P)
print(tables.describe_grid(runs))
runs = runs[runs["model"] == P.shown_model]
name = plots.short_name(P.shown_model)
truncated = runs[runs["setting"] == tables.TRUNCATED]
run_q = tables.running_table(store, runs, dist="samp")
run_p = tables.running_table(store, truncated, dist="raw")
finals = tables.final_table(store, runs)
under_q = finals[finals["dist"] == "samp"]
under_p = finals[(finals["dist"] == "raw") & (finals["setting"] == tables.TRUNCATED)]
print(f"shown: {name}, {len(runs)} runs ({len(truncated)} top-p)")

# %% [markdown]
# Per run: the share of positions `n >= 16` with `|z_n| <= 2` (the first positions carry little
# information either way).

# %%
BURN_IN = 15
per_run = pd.concat([
    pd.DataFrame([{"run_id": rid, "dist": dist, "setting": g["setting"].iloc[0],
                   "share_within_2sigma": stats.share_within(g["z_n"], 2, BURN_IN)}
                  for rid, g in table.groupby("run_id", sort=False)])
    for dist, table in (("samp", run_q), ("raw", run_p))
], ignore_index=True)

# %%
main_q = run_q[run_q["setting"] == tables.MAIN]
trunc_q = run_q[run_q["setting"] == tables.TRUNCATED]
groups = [(main_q, plots.H_COLOR, "o", "temperature 1 (q = p)"),
          (trunc_q, plots.Q_COLOR, "s", f"top-p {P.top_p:g} under q"),
          (run_p, plots.P_COLOR, "x", f"top-p {P.top_p:g} under p")]

fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
(ax_a, ax_b), (ax_c, ax_d) = axes
for table, color, _, label in groups:
    plots.plot_z_trajectories(ax_a, table, color=color, alpha=0.5, label=f"{label}: {table['run_id'].nunique()} runs")
ax_a.set_title("(a) trajectories $z_n$")
ax_a.legend(loc="lower left", fontsize="x-small")

d_all = np.concatenate([under_q["D"].to_numpy(dtype=float), under_p["D"].to_numpy(dtype=float)])
d_bins = np.linspace(np.nanmin(d_all) - 0.05, np.nanmax(d_all) + 0.05, 25)
plots.plot_d_hist(ax_b, under_q["D"], bins=d_bins, label=f"all runs under q (n = {len(under_q)})")
plots.plot_d_hist(ax_b, under_p["D"], bins=d_bins, color=plots.P_COLOR,
                  label=f"top-p under p (n = {len(under_p)})")
ax_b.set_title(f"(b) final $D_n$ after {P.max_new_tokens} tokens")
ax_b.legend(loc="best")

for table, color, _, label in groups[:2]:
    plots.plot_sigma_decay(ax_c, table, color=color, alpha=0.5, label=label, reference=table is main_q)
ax_c.set_title("(c) running standard error $\\sigma_n$ under q")
ax_c.legend(loc="lower left", fontsize="x-small")

order = list(runs["run_id"])
for dist, setting, color, marker, label in [("samp", tables.MAIN, plots.H_COLOR, "o", "temperature 1 (q = p)"),
                                            ("samp", tables.TRUNCATED, plots.Q_COLOR, "s", "top-p under q"),
                                            ("raw", tables.TRUNCATED, plots.P_COLOR, "x", "top-p under p")]:
    sub = per_run[(per_run["dist"] == dist) & (per_run["setting"] == setting)]
    x = np.array([order.index(r) for r in sub["run_id"]])
    ax_d.scatter(x, sub["share_within_2sigma"], color=color, marker=marker, label=label, zorder=3)
ax_d.axhline(0.95, color="k", lw=0.8, ls="--", label="0.95 (N(0, 1))")
ax_d.set_ylim(-0.03, 1.03)
ax_d.set_xlabel("run (untruncated first, then top-p)")
ax_d.set_ylabel("share of positions with $|z_n| \\leq 2$")
ax_d.set_title(f"(d) per run: positions n > {BURN_IN} within ±2σ")
ax_d.legend(loc="lower left", fontsize="x-small")
plots.finish(fig, f"{name}: diagnostics")

# %% [markdown]
# The numbers the figure claims. The slope of `σ_n` is fitted to the median over runs, from
# `n = 16` to the end.

# %%
median_sigma = run_q[run_q["n"] > BURN_IN].groupby("n")["sigma_n"].median()
slope = tables.loglog_slope(median_sigma.index, median_sigma.to_numpy())
share_q = per_run.loc[per_run["dist"] == "samp", "share_within_2sigma"]
share_p = per_run.loc[per_run["dist"] == "raw", "share_within_2sigma"]
checks = [
    figures.claim(f"{name}: log-log slope of the median sigma_n", slope, at_least=-0.65, at_most=-0.35),
    figures.claim(f"{name}: median share of positions within 2 sigma under q", share_q.median(), at_least=0.8),
    figures.claim(f"{name}: median share of positions within 2 sigma, top-p runs under p", share_p.median()),
    # the top-p runs under p as one sample (tables.pooled_z): their median share of a few runs is one draw's luck
    figures.claim(f"{name}: pooled z of the top-p runs under p", tables.pooled_z(under_p, runs), at_most=-2,
                  digits=1),
    figures.claim(f"{name}: share of runs with final |z| <= 2 under q", np.mean(np.abs(under_q["z"]) <= 2),
                 at_least=0.75),
]
print(f"all claims hold: {all(checks)}")

save_figure(fig, "fig09_diagnostics",
            caption=(f"{name}, {len(runs)} runs of {P.max_new_tokens} tokens: (a) z_n trajectories: untruncated runs (dark), "
                     f"top-p {P.top_p:g} runs under q (blue) and under the raw p (red); (b) final D_n; (c) sigma_n against the "
                     "1/sqrt(n) reference; (d) per run, the share of positions n >= 16 within ±2σ."),
            numbers={"model": P.shown_model, "sigma_n slope": round(slope, 2),
                     "median share within 2 sigma under q": round(float(share_q.median()), 2),
                     "median share within 2 sigma under p (top-p)": round(float(share_p.median()), 2)},
            run_ids=runs["run_id"].tolist())
