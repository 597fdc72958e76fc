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
# # The refined typical set: one model's typical set against the texts a second model finds plausible
#
# Source: the study, arXiv 2405.13798 (v4), which restricts the typical set to grammatical texts. Here
# "grammatical" is stood in for by a second model: the texts that model B finds typical of itself.
# By the AEP, model A's samples of `N` bytes fall in a typical set of about `2^(N h_A)` texts (`h_A`
# its entropy rate in bits per byte); B's plausible texts of `N` bytes number about `2^(N h_B)`. Their
# ratio, `2^(N (h_A - h_B))`, is estimated per length `N` from each model's own untruncated runs of
# the shared self grid, with a 95% CI from the runs. Per byte, not per token: the two embedded models
# do not share a vocabulary, so the same text has different token counts under each.
#
# The plain typical set (`tables.typical_set_table`: `n h_n` against `n log2 V`, per token) is the
# `typical_set_size` notebook's; it is printed here for reference. The relative sizes are
# observations; the one bound is what must hold for any text: an entropy rate of at most 8 bits per byte.

# %%
from aep_lib.report import figures

figures.setup_notebook()  # before the other imports: some warn as they load

import math

import aep_lib.params
from aep_lib.analysis import entropy_rate, tables
from aep_lib.core import inference
from aep_lib.paths import store_dir
from aep_lib.report import phenomena_plots, plots
from aep_lib.report.figures import save_figure
from aep_lib.store.run_store import RunStore

# %% tags=["parameters"]
profile = "cpu"  # params profile this execution belongs to (cpu or paper)
models = "smollm2-135m,gemma-3-270m"  # comma-separated model names (at least two): embedded short names, hub ids or folders
prompts = "p01,p02"  # comma-separated prompt ids from params/prompts.yaml
n_seeds = 3  # generations per model and prompt at temperature 1 without truncation
n_seeds_truncated = 1  # generations per model and prompt with top-p truncation (the shared grid; not used here)
top_p = 0.9  # nucleus mass of the grid's truncated setting
max_new_tokens = 192  # length of every generation, in tokens
batch_size = 24  # sequences generated together (both settings of a model in one batch)
device = "auto"  # torch device: auto, cpu, cuda, cuda:1, ...
dtype = "auto"  # model dtype: auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16
byte_points = 24  # common text lengths in bytes at which the models are compared

# %%
P = aep_lib.params.notebook_params("refined_typical_set", globals())
store = RunStore(store_dir(P.profile))
grid = tables.ensure_self_grid(store, P)
main = grid[grid["setting"] == tables.MAIN]
print(tables.describe_grid(grid))
vocab = {m: int(v) for m, v in main.groupby("model")["vocab_size"].first().items()}
plain = tables.typical_set_table(tables.running_table(store, main, dist="samp"), vocab)
for model, g in plain.groupby("model", sort=False):
    last = g.iloc[-1]
    print(f"{plots.short_name(model)}: per token, h_n {last['h_n']:.2f} bits/token at n = {int(last['n'])}: typical set "
          f"2^{last['log2_typical']:.0f} of 2^{last['log2_all']:.0f} token strings (vocabulary {vocab[model]})")

# %% [markdown]
# ## Per byte
#
# Each run's cumulative entropy `sum H_t` against the UTF-8 bytes of its decoded prefix, read at common
# byte lengths `N` that every run reaches.

# %%
curves = entropy_rate.byte_entropy(store, main)
lengths = entropy_rate.common_byte_lengths(curves, P.byte_points)
per_run = entropy_rate.at_byte_lengths(curves, lengths)
pairs = [(a, b) for a in P.models for b in P.models if a != b]
relative = entropy_rate.relative_typical_set(per_run, pairs)
n_max = int(lengths[-1])
ends = curves.sort_values("n").groupby("run_id").tail(1)
for model in P.models:
    e = ends[ends["model"] == model]
    ci = inference.bootstrap_ci(per_run.loc[(per_run["model"] == model) & (per_run["N"] == n_max), "h_byte"])
    print(f"{plots.short_name(model)}: {(e['n_bytes'] / e['n']).mean():.2f} bytes/token; entropy per byte at "
          f"N = {n_max}: {ci} bits/byte ({ci.n} runs)")

# %% [markdown]
# ## The relative size, with its assumptions

# %%
print("assumptions:")
for i, line in enumerate(entropy_rate.ASSUMPTIONS, 1):
    print(f"  {i}. {line}")
print()
for (a, b), g in relative.groupby(["model", "other"], sort=False):
    for r in g[g["N"].isin([int(lengths[0]), int(lengths[len(lengths) // 2]), n_max])].itertuples():
        print(f"{plots.short_name(a)} vs {plots.short_name(b)}, N = {r.N:>5} bytes: log2 |T_A| = {r.log2_typical:7.1f}, "
              f"log2 |plausible_B| = {r.log2_plausible:7.1f}, log2 ratio = {figures.signed(r.log2_relative, 1)} "
              f"[{figures.signed(r.low, 1)}, {figures.signed(r.high, 1)}] bits")

# %% [markdown]
# The figure and the numbers it claims.

# %%
fig = phenomena_plots.plot_relative_typical_set(per_run, relative, P.models)
checks, numbers = [], {}
for model in P.models:
    name = plots.short_name(model)
    h = per_run.loc[(per_run["model"] == model) & (per_run["N"] == n_max), "h_byte"].mean()
    checks.append(figures.claim(f"{name}: entropy rate at N = {n_max} bytes (bits/byte)", h, at_most=8.0))
    numbers[f"{name}: bits/byte"] = round(h, 3)
for (a, b), g in relative.groupby(["model", "other"], sort=False):
    last = g[g["N"] == n_max].iloc[0]
    label = f"{plots.short_name(a)} relative to {plots.short_name(b)}"
    figures.claim(f"{label}: log2 size ratio per byte (bits)", last["log2_relative"] / n_max, digits=3)
    figures.claim(f"{label}: log2 size ratio at N = {n_max} bytes (bits)", last["log2_relative"], digits=1)
    numbers[f"{label}: log2 ratio at {n_max} bytes"] = round(last["log2_relative"], 1)
    numbers[f"{label}: CI"] = [round(last["low"], 1), round(last["high"], 1)]
print(f"all claims hold: {all(checks)}")
save_figure(fig, "refined_typical_set",
            caption=("(a) Entropy per byte of each model's own temperature-1 text at common lengths N (mean over runs, "
                     "band: range); (b) log2 of the size of one model's typical set relative to the texts the other "
                     "finds typical of itself, N (h_A - h_B), with 95% bootstrap CIs over runs."),
            numbers=numbers, run_ids=main["run_id"].tolist())

# %% [markdown]
# ## Against the source
#
# arXiv 2405.13798 v4 argues about the refined typical set's size; it is estimated here with a second
# model as the judge of plausibility, which the source does not do.

# %%
print(f"{'quantity':<54} {'source':<18} embedded models")
for (a, b), g in relative.groupby(["model", "other"], sort=False):
    per_byte = g[g["N"] == n_max].iloc[0]["log2_relative"] / n_max
    print(f"{'log2 |T_A| / |plausible_B| per byte, ' + plots.short_name(a):<54} {'see the paper':<18} "
          f"{figures.signed(per_byte, 3)} bits/byte ({plots.short_name(b)} as B)")
for model in P.models:
    h = per_run.loc[(per_run["model"] == model) & (per_run["N"] == n_max), "h_byte"].mean()
    print(f"{'log2 share of all byte strings per byte, ' + plots.short_name(model):<54} {'not given':<18} "
          f"{figures.signed(h - math.log2(256), 2)} bits/byte")
