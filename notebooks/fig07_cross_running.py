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
# # Fig 7: running cross-entropy `h^(A,B)_n` and running `l^B_n` on one mid-divergence text
#
# A and B share a vocabulary, so one joint pass over A's own tokens gives, per position, B's
# surprisal and the cross-entropy `c_t = -sum_v q_A(v) log2 q_B(v)`. The cross-AEP says `l^B_n`
# stays within about ±2σ (from the cross-varentropy) of `h^(A,B)_n` on text sampled from `q_A`,
# even where it is far from B's own entropy `h^B_n`. The text shown is the one with the median
# `h^(A,B)` among A's texts (a representative, mid-divergence sequence).
#
# On the `cpu` profile A and B are decoding variants of one network (Gemma at temperature 0.7 /
# top-p 0.9 against Gemma raw). There `log q_B = T log q_A + k_t` on A's support (`k_t` a constant per step), so
# `s^B_t - c_t = T (s^A_t - H^A_t)` and `W_t = T² V^A_t`: `z^(A,B)` equals A's own `z^A` exactly,
# and the cross-AEP holds by algebra while B's own `z^B` is far below zero. Two different networks are the
# non-trivial case: the `cpu-full` profile's Qwen2.5-Coder 0.5B and 1.5B in both directions (one execution per
# pair, `_runs`; all their texts: `cross_aep_family`), the `paper` profile's Gemma 1B -> 12B.

# %%
from aep_lib.report import figures

figures.setup_notebook()  # before the other imports: some warn as they load

import matplotlib.pyplot as plt
import numpy as np

import aep_lib.params
from aep_lib.analysis import comparison_tables
from aep_lib.core import sampling
from aep_lib.paths import store_dir
from aep_lib.report import plots
from aep_lib.report.figures import save_figure
from aep_lib.runs import comparisons
from aep_lib.store.run_store import RunStore

# %% tags=["parameters"]
profile = "cpu"  # params profile this execution belongs to (cpu or paper)
source = "gemma-3-270m@t0.7p0.9"  # A, the generator: <model>[@t<temperature>][k<top_k>][p<top_p>]
scorer = "gemma-3-270m"  # B, the scorer: must share A's vocabulary
prompts = "p01,p02"  # comma-separated prompt ids of the shared source grid (params/prompts.yaml)
n_seeds = 2  # seeds per prompt and variant (0..n_seeds-1)
max_new_tokens = 64  # tokens per source generation
on_eos = "suppress"  # end-of-text handling while generating: suppress (a warp, part of q), stop, continue
batch_size = 8  # sequences generated together
device = "auto"  # auto (CUDA if present), cpu or cuda
dtype = "auto"  # auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16

# %%
P = aep_lib.params.notebook_params("fig07_cross_running", globals())
A, B = P.pair()
store = RunStore(store_dir(P.profile))
runs = comparisons.ensure_comparisons(store, [A], P.prompts, P.seeds, P.max_new_tokens, pairs=[(A, B)],
                                      batch_size=P.batch_size, device=P.device, dtype=P.dtype)
records = comparison_tables.compare(store, run_ids=runs["run_id"])
usable = records[records["status"] == "usable"].sort_values("h_cross").reset_index(drop=True)
print(f"{len(usable)} usable of {len(records)} records for {sampling.pair_label(A, B)}")

# %%
mid = usable.iloc[len(usable) // 2]
r_cross = comparison_tables.comparison_running(store, mid["run_id"], "cross")  # l^B_n, h^(A,B)_n, sigma from W_t
r_b = comparison_tables.comparison_running(store, mid["run_id"], "scorer")  # B's own h^B_n
ref = store.tokens(mid["run_id"], columns=["entropy_ref"])["entropy_ref"].to_numpy()
h_a = np.cumsum(ref) / np.arange(1, len(ref) + 1)

fig, ax = plt.subplots(figsize=(8.5, 4.8))
plots.plot_running(ax, r_cross, label_l="$l^B_n$ (B's log-perplexity)", label_h="$h^{(A,B)}_n$ (cross-entropy)",
                   title=f"A = {A}, B = {B}: {mid['prompt_id']}, seed {int(mid['seed'])}\n"
                         f"z^(A,B) = {figures.signed(mid['z_cross'], 1)}, z^B = {figures.signed(mid['z'], 1)}")
ax.plot(r_b["n"], r_b["h_n"], color=plots.CROSS_COLOR, ls="--", lw=1.2, label="$h^B_n$ (B's own entropy)")
ax.plot(r_b["n"], h_a, color=plots.OWN_COLOR, ls=":", lw=1.4, label="$h^A_n$ (A's entropy)")
ax.legend(loc="center right")
fig.tight_layout()
save_figure(fig, figures.per_execution("fig07_cross_running"),
            f"Running h^(A,B) with ±1σ/±2σ bands and running l^B for the median-h^(A,B) text of {A} under {B}; "
            "B's own running entropy and A's entropy dashed and dotted.",
            numbers={"h_cross": round(float(mid["h_cross"]), 2), "l_B": round(float(mid["l"]), 2),
                     "z_cross": round(float(mid["z_cross"]), 2), "z_B": round(float(mid["z"]), 2)},
            run_ids=[mid["run_id"]])

# %% [markdown]
# The numbers the figure shows (rounded).

# %%
print(f"text {mid['prompt_id']} seed {int(mid['seed'])}, {int(mid['n_tokens'])} tokens: final l^B {mid['l']:.2f}, "
      f"h^(A,B) {mid['h_cross']:.2f}, h^B {mid['h']:.2f}, h^A {h_a[-1]:.2f} bits/token; KL {mid['kl']:.2f}")
print(f"z^(A,B) {figures.signed(mid['z_cross'], 1)}, z^B {figures.signed(mid['z'], 1)}")
print(f"l^B ends within ±2σ of h^(A,B): {abs(mid['z_cross']) <= 2}; within ±2σ of h^B: {abs(mid['z']) <= 2}")
print(f"over all {len(usable)} texts: mean z^(A,B) {figures.signed(usable['z_cross'].mean(), 1)}, "
      f"mean z^B {figures.signed(usable['z'].mean(), 1)}")
