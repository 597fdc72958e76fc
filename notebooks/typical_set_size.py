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
# # Typical-set size
#
# By the AEP, a model's samples of length `n` almost all fall in a typical set of about
# `2^(n·h_n)` token strings, where `h_n` is the empirical entropy rate (bits/token). All token
# strings of length `n` number `V^n = 2^(n·log2 V)`. Per model, from the untruncated runs
# (`q = p`): (a) `n·h_n` (mean over runs, band: their range) against `n·log2 V`; (b) their
# difference, the log2 of the share of all strings that the typical set holds.
#
# The claim: `h_n` is far below `log2 V`, so the typical set is an exponentially vanishing
# fraction of all strings (the share halves every few tokens' worth of bits).

# %%
from aep_lib.report import figures

figures.setup_notebook()  # before the other imports: some warn as they load

import math

import matplotlib.pyplot as plt

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
P = aep_lib.params.notebook_params("typical_set_size", globals())
store = RunStore(store_dir(P.profile))
runs = tables.ensure_self_grid(store, P)
print(tables.describe_grid(runs))
main = runs[runs["setting"] == tables.MAIN]
vocab = {m: int(v) for m, v in main.groupby("model")["vocab_size"].first().items()}
running = tables.running_table(store, main, dist="samp")
table = tables.typical_set_table(running, vocab)
for model in P.models:
    print(f"{plots.short_name(model)}: vocabulary {vocab[model]} tokens, log2 V = {math.log2(vocab[model]):.2f} bits")

# %%
colors = plots.model_colors(P.models)
fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(11, 4.2))
for model, g in table.groupby("model", sort=False):
    name = plots.short_name(model)
    ax_a.plot(g["n"], g["log2_all"], color=colors[model], ls="--", lw=1.2, label=f"{name}: all strings, $n \\log_2 V$")
    ax_a.plot(g["n"], g["log2_typical"], color=colors[model], lw=1.8, label=f"{name}: typical set, $n h_n$")
    ax_a.fill_between(g["n"], g["n"] * g["h_n_min"], g["n"] * g["h_n_max"], color=colors[model], alpha=0.2, lw=0)
    ax_b.plot(g["n"], g["log2_fraction"], color=colors[model], lw=1.8, label=name)
ax_a.set_xlabel("tokens $n$")
ax_a.set_ylabel("log$_2$ of the number of strings (bits)")
ax_a.set_title(f"(a) typical set vs all strings ({len(main) // len(P.models)} runs per model)")
ax_a.legend(loc="upper left")
ax_b.set_xlabel("tokens $n$")
ax_b.set_ylabel("$n (h_n - \\log_2 V)$ (bits)")
ax_b.set_title("(b) log$_2$ of the typical set's share of all strings")
ax_b.legend(loc="lower left")
plots.finish(fig)

# %% [markdown]
# The numbers the figure claims, at the last position.

# %%
numbers, checks = {}, []
for model, g in table.groupby("model", sort=False):
    name = plots.short_name(model)
    last = g.iloc[-1]
    n = int(last["n"])
    bits_per_token = math.log2(vocab[model]) - last["h_n"]
    numbers |= {f"{name}: h_n (bits/token)": round(last["h_n"], 2), f"{name}: log2 V": round(math.log2(vocab[model]), 2),
                f"{name}: log2 share of the typical set at n = {n}": round(last["log2_fraction"])}
    print(f"{name}: at n = {n}, the typical set holds about 2^{last['log2_typical']:.0f} of the "
          f"2^{last['log2_all']:.0f} strings: a share of 2^{last['log2_fraction']:.0f}")
    checks.append(figures.claim(f"{name}: entropy rate h_n / log2 V", last["h_n"] / math.log2(vocab[model]),
                               at_most=0.5))
    checks.append(figures.claim(f"{name}: log2 share lost per token (bits)", bits_per_token, at_least=1))
print(f"all claims hold: {all(checks)}")

save_figure(fig, "typical_set_size",
            caption=("Per model, from the untruncated runs: (a) the log-size n·h_n of the typical set against the "
                     "log-size n·log2 V of all token strings of length n; (b) their difference, the log2 of the "
                     "typical set's share of all strings, which falls linearly: an exponentially vanishing fraction."),
            numbers=numbers, run_ids=main["run_id"].tolist())
