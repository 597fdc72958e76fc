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
# # Fig 2: one sequence of model A under model B, and B's own text beside it
#
# Scorer B reads a text that model A generated (A's prompt is fed as context and excluded from the
# statistics, docs/science.md "source masking"). Left: B's running log-perplexity `l_n` against B's
# running entropy `h_n`, with the ±1σ and ±2σ bands of `h_n`; right: the same for a text B generated
# itself from the same prompt and seed (the self case, where the AEP says `|z_n| <= 2` most of the
# time). With different tokenizers B re-tokenizes A's text and scores exactly its characters.

# %%
from aep_lib.report import figures

figures.setup_notebook()  # before the other imports: some warn as they load

import matplotlib.pyplot as plt

import aep_lib.params
from aep_lib.analysis import comparison_tables
from aep_lib.core import sampling, stats
from aep_lib.paths import store_dir
from aep_lib.report import plots
from aep_lib.report.figures import save_figure
from aep_lib.runs import comparisons
from aep_lib.store.run_store import RunStore

# %% tags=["parameters"]
profile = "cpu"  # params profile this execution belongs to (cpu or paper)
source = "smollm2-135m"  # A, the generator: <model>[@t<temperature>][k<top_k>][p<top_p>]
scorer = "gemma-3-270m"  # B, the scorer (scores with its own sampling distribution q_B)
prompts = "p01,p02"  # comma-separated prompt ids of the shared source grid (params/prompts.yaml)
n_seeds = 2  # seeds per prompt and variant (0..n_seeds-1)
max_new_tokens = 64  # tokens per source generation
on_eos = "suppress"  # end-of-text handling while generating: suppress (a warp, part of q), stop, continue
batch_size = 8  # sequences generated together
device = "auto"  # auto (CUDA if present), cpu or cuda
dtype = "auto"  # auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16
prompt = "p01"  # prompt id of the sequence shown
seed = 0  # seed of the sequence shown

# %%
P = aep_lib.params.notebook_params("fig02_single_sequence_divergence", globals())
A, B = P.pair()
store = RunStore(store_dir(P.profile))
runs = comparisons.ensure_comparisons(store, [A, B], P.prompts, P.seeds, P.max_new_tokens, pairs=[(A, B), (B, B)],
                                      batch_size=P.batch_size, device=P.device, dtype=P.dtype)
print(f"{len(runs)} comparison records ({(runs['status'] == 'ok').sum()} ok) for A = {A}, B = {B}")

# %% [markdown]
# The sequence shown: prompt and seed from the parameters, B's running statistics under `q_B`.

# %%
other = comparison_tables.record_of(runs, sampling.pair_label(A, B), P.prompt, P.seed)
own = comparison_tables.record_of(runs, sampling.pair_label(B, B), P.prompt, P.seed)
r_other = comparison_tables.comparison_running(store, other["run_id"], "scorer")
r_own = comparison_tables.comparison_running(store, own["run_id"], "scorer")

fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, r, row, title in [(axes[0], r_other, other, f"B = {B} on A = {A}'s text"),
                          (axes[1], r_own, own, f"B = {B} on its own text (self)")]:
    plots.plot_running(ax, r, label_l="B's log-perplexity $l_n$", label_h="B's entropy $h_n$",
                       title=f"{title}\n{P.prompt}, seed {P.seed}: final z = {figures.signed(row['z_samp'], 1)}")
axes[0].legend(loc="upper right")
fig.tight_layout()
save_figure(fig, figures.per_execution("fig02_single_sequence_divergence"),
            f"Running log-perplexity and entropy of {B} on one text of {A} (left) and on its own text (right), "
            f"prompt {P.prompt}, seed {P.seed}, with ±1σ/±2σ bands of the entropy.",
            numbers={"z_other": round(float(other["z_samp"]), 2), "z_own": round(float(own["z_samp"]), 2)},
            run_ids=[other["run_id"], own["run_id"]])

# %% [markdown]
# The numbers the figure shows (rounded): final `l`, `h`, `z` of B on each text, bits per byte of
# both models over the same characters, and the share of positions `n >= 16` within ±2σ.

# %%
BURN_IN = 16  # positions n <= 16 left out (z_n of the first positions carries little information)
for name, row, r in [("A's text", other, r_other), ("own text", own, r_own)]:
    share = stats.share_within(r["z_n"], 2, burn_in=BURN_IN, nan="drop")
    print(f"B on {name}: {int(row['n_tokens'])} tokens ({row['mode']}), l {row['l_samp']:.2f}, h {row['h_samp']:.2f}, "
          f"z {figures.signed(row['z_samp'], 1)}; within ±2σ at {share:.0%} of positions n >= 16")
print(f"bits per byte over A's characters: A {other['bpb_source']:.2f}, B {other['bpb_scorer']:.2f}")
print(f"B's own text ends within ±2σ: {abs(own['z_samp']) <= 2}")
print(f"A's text ends further from B's entropy than B's own text: {abs(other['z_samp']) > abs(own['z_samp'])}")
