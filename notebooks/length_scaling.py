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
# # Length scaling of self-typicality
#
# Every run under its sampling distribution `q`, per model, against the length `n`:
#
# - (a) the share of runs with `|z_n| <= 1` and `|z_n| <= 2`, against the N(0, 1) values 0.68 and 0.95;
# - (b) the variance across runs of the log-perplexity `l_n` (pooled within prompt and setting:
#   runs of different prompts converge to different entropy rates) and of the gap `D_n = l_n - h_n`,
#   with the mean `σ_n²` (what the martingale CLT predicts for `var D_n`) and the `1/n` reference.
#
# The claims: the shares sit near 0.68 and 0.95 at every length; the mean `σ_n²` falls like `1/n`
# (log-log slope near -1) and `var D_n` matches it, so `var D_n` falls like `1/n` too.

# %%
from aep_lib.report import figures

figures.setup_notebook()  # before the other imports: some warn as they load

import matplotlib.pyplot as plt
import pandas as pd

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
P = aep_lib.params.notebook_params("length_scaling", globals())
store = RunStore(store_dir(P.profile))
runs = tables.ensure_self_grid(store, P)
print(tables.describe_grid(runs))
running = tables.running_table(store, runs, dist="samp")
ns = tables.log_grid(P.max_new_tokens, points=40)
scaling = pd.concat([tables.length_scaling(g, ns, group=["prompt_id", "setting"]).assign(model=model)
                     for model, g in running.groupby("model", sort=False)], ignore_index=True)

# %%
colors = plots.model_colors(P.models)
fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(11, 4.2))
for model, g in scaling.groupby("model", sort=False):
    name = plots.short_name(model)
    ax_a.plot(g["n"], g["share_z2"], color=colors[model], lw=1.5, label=f"{name}: $|z_n| \\leq 2$")
    ax_a.plot(g["n"], g["share_z1"], color=colors[model], lw=1.5, ls=":", label=f"{name}: $|z_n| \\leq 1$")
    ax_b.plot(g["n"], g["var_l"], color=colors[model], lw=1.5, label=f"{name}: var $l_n$ (within prompt)")
    ax_b.plot(g["n"], g["var_D"], color=colors[model], lw=1.5, ls="--", label=f"{name}: var $D_n$")
    ax_b.plot(g["n"], g["mean_sigma2"], color=colors[model], lw=1.0, ls=":", label=f"{name}: mean $\\sigma_n^2$")
for level in (0.683, 0.954):
    ax_a.axhline(level, color="k", lw=0.8, ls="--")
plots.log_axis(ax_a)
ax_a.set_ylim(0, 1.05)
ax_a.set_xlabel("tokens $n$")
ax_a.set_ylabel("share of runs")
per_model = running.groupby("model")["run_id"].nunique()
ax_a.set_title(f"(a) runs within ±1σ, ±2σ ({', '.join(str(per_model[m]) for m in P.models)} runs)")
ax_a.legend(loc="lower right")
first = scaling[scaling["model"] == P.models[0]]
ax_b.plot(first["n"], tables.inverse_n_reference(first["n"], first["var_D"]), color="k", lw=1.0,
          label="$\\propto 1/n$")
plots.log_axis(ax_b)
plots.log_axis(ax_b, axis="y")
ax_b.set_xlabel("tokens $n$")
ax_b.set_ylabel("variance across runs (bits²)")
ax_b.set_title("(b) spread of $l_n$ and $D_n$ across runs")
ax_b.legend(loc="lower left", fontsize="x-small")
plots.finish(fig)

# %% [markdown]
# The numbers the figure claims: shares, slopes and the variance ratio over the tabulated
# lengths `n >= 16`. The slope of `var D_n` itself is reported, not claimed (a variance over a
# few runs is noisy; the ratio to the mean `σ_n²` averages that out). The within-prompt variance
# of `l_n` is reported, not claimed: each run settles on its own entropy rate, so it need not
# fall like `1/n`.

# %%
numbers, checks = {}, []
for model, g in scaling.groupby("model", sort=False):
    name = plots.short_name(model)
    tail = g[g["n"] >= 16]
    slope_d = tables.loglog_slope(tail["n"], tail["var_D"])
    slope_l = tables.loglog_slope(tail["n"], tail["var_l"])
    slope_s = tables.loglog_slope(tail["n"], tail["mean_sigma2"])
    ratio = float((tail["var_D"] / tail["mean_sigma2"]).mean())
    numbers |= {f"{name}: mean share |z_n| <= 1": round(tail["share_z1"].mean(), 2),
                f"{name}: mean share |z_n| <= 2": round(tail["share_z2"].mean(), 2),
                f"{name}: slope mean sigma_n^2": round(slope_s, 2), f"{name}: slope var D_n": round(slope_d, 2),
                f"{name}: slope var l_n": round(slope_l, 2), f"{name}: mean var D_n / mean sigma_n^2": round(ratio, 2)}
    checks.append(figures.claim(f"{name}: mean share of runs with |z_n| <= 1 (N(0,1): 0.68)", tail["share_z1"].mean(),
                               at_least=0.45))
    checks.append(figures.claim(f"{name}: mean share of runs with |z_n| <= 2 (N(0,1): 0.95)", tail["share_z2"].mean(),
                               at_least=0.8))
    checks.append(figures.claim(f"{name}: log-log slope of mean sigma_n^2", slope_s, at_least=-1.3, at_most=-0.7))
    checks.append(figures.claim(f"{name}: mean of var D_n / mean sigma_n^2", ratio, at_least=0.33, at_most=3))
    figures.claim(f"{name}: log-log slope of var D_n (observed; noisy with few runs)", slope_d)
    figures.claim(f"{name}: log-log slope of var l_n within prompt (observed, no claim)", slope_l)
print(f"all claims hold: {all(checks)}")

save_figure(fig, "length_scaling",
            caption=("Against the length n, for every run under its sampling distribution q: (a) the share of runs "
                     "with |z_n| <= 1 and <= 2 (dashed: the N(0, 1) values 0.68 and 0.95); (b) the variance across "
                     "runs of l_n (pooled within prompt and setting) and of D_n, the mean sigma_n^2, and the 1/n "
                     "reference."),
            numbers=numbers, run_ids=runs["run_id"].tolist())
