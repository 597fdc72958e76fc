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
# # Fig 10: the scorer's entropy and log-perplexity along another model's text
#
# Scorer B reads every text of model A (left) and every text of its own (right). At each position
# `t`: B's surprisal `s_t` (its log-perplexity, per token) and B's entropy `H_t` (the surprisal it
# expects), averaged over texts and smoothed with a rolling mean. On its own text the two curves
# coincide on average (AEP); on A's text B pays more than it expects when A is not B.

# %%
from aep_lib.report import figures

figures.setup_notebook()  # before the other imports: some warn as they load

import matplotlib.pyplot as plt
import numpy as np

import aep_lib.params
from aep_lib.core import sampling
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
window = 16  # rolling-mean window along the text, in tokens

# %%
P = aep_lib.params.notebook_params("fig10_entropy_vs_perplexity", globals())
A, B = P.pair()
store = RunStore(store_dir(P.profile))
runs = comparisons.ensure_comparisons(store, [A, B], P.prompts, P.seeds, P.max_new_tokens, pairs=[(A, B), (B, B)],
                                      batch_size=P.batch_size, device=P.device, dtype=P.dtype)
ok = runs[runs["status"] == "ok"]
print(f"{len(ok)} of {len(runs)} comparison records ok for A = {A}, B = {B}")

# %%
cols = ["position", "surprisal_samp", "entropy_samp"]
frames = {}
for name, pair in [("other", sampling.pair_label(A, B)), ("own", sampling.pair_label(B, B))]:
    tok = store.tokens(ok.loc[ok["pair"] == pair, "run_id"].tolist(), columns=cols)
    frames[name] = tok.rename(columns={"surprisal_samp": "surprisal", "entropy_samp": "entropy"})

fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
curves = {}
for ax, name, title, color in [(axes[0], "other", f"B = {B} on A = {A}'s texts", plots.OTHER_COLOR),
                               (axes[1], "own", f"B = {B} on its own texts", plots.OWN_COLOR)]:
    curves[name] = plots.plot_position_profile(ax, frames[name], P.window, colors=(color, plots.H_COLOR))
    ax.set_title(title)
    ax.legend(loc="upper right")
fig.tight_layout()
gap = {k: float(frames[k]["surprisal"].mean() - frames[k]["entropy"].mean()) for k in frames}
save_figure(fig, figures.per_execution("fig10_entropy_vs_perplexity"),
            f"Per-position surprisal and entropy of {B} (rolling mean over {P.window} tokens, mean over texts) on "
            f"{A}'s texts and on its own texts.",
            numbers={"gap_other": round(gap["other"], 2), "gap_own": round(gap["own"], 2)},
            run_ids=ok["run_id"].tolist())

# %% [markdown]
# The numbers the figure shows (rounded): the mean gap between surprisal and entropy, and the share
# of positions where the smoothed surprisal curve lies above the smoothed entropy curve.

# %%
for name, label in [("other", "A's texts"), ("own", "its own texts")]:
    above = np.mean(curves[name]["surprisal"] > curves[name]["entropy"])
    print(f"B on {label}: mean surprisal {frames[name]['surprisal'].mean():.2f}, mean entropy "
          f"{frames[name]['entropy'].mean():.2f}, gap {figures.signed(gap[name], 2)} bits/token; surprisal curve above "
          f"the entropy curve at {above:.0%} of positions")
print(f"the gap on A's texts exceeds the gap on B's own texts: {gap['other'] > gap['own']}")
