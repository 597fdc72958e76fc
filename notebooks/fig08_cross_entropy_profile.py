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
# # Fig 8: the per-step cross-entropy of a low-divergence text, with its running mean
#
# Per position `t` of one of A's texts: the cross-entropy `c_t` of A's sampling distribution under
# B (what B expects to pay, on average, for A's next token) and B's actual surprisal `s_t`, each
# with its running mean (`h^(A,B)_n` and `l^B_n`). The text shown is A's text with the lowest mean
# KL divergence `KL_t = c_t - H^A_t` (the low-divergence end of Fig 6).

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
window = 16  # rolling-mean window of the per-step curves, in tokens

# %%
P = aep_lib.params.notebook_params("fig08_cross_entropy_profile", globals())
A, B = P.pair()
store = RunStore(store_dir(P.profile))
runs = comparisons.ensure_comparisons(store, [A], P.prompts, P.seeds, P.max_new_tokens, pairs=[(A, B)],
                                      batch_size=P.batch_size, device=P.device, dtype=P.dtype)
records = comparison_tables.compare(store, run_ids=runs["run_id"])
usable = records[records["status"] == "usable"].sort_values("kl").reset_index(drop=True)
print(f"{len(usable)} usable of {len(records)} records for {sampling.pair_label(A, B)}")

# %%
low = usable.iloc[0]
comparison_tables.comparison_running(store, low["run_id"], "cross")  # a clear error unless the vocabulary is shared
tok = store.tokens(low["run_id"], columns=["position", "cross_entropy", "surprisal_samp", "kl"])
t = tok["position"].to_numpy() + 1
c, s = tok["cross_entropy"].to_numpy(), tok["surprisal_samp"].to_numpy()

fig, ax = plt.subplots(figsize=(9.5, 4.8))
ax.plot(t, s, ".", color=plots.L_COLOR, ms=3, alpha=0.5, label="$s^B_t$ (B's surprisal)")
ax.plot(t, c, color=plots.CROSS_COLOR, lw=0.7, alpha=0.6, label="$c_t$ (cross-entropy)")
ax.plot(t, plots.rolling_mean(c, P.window), color=plots.CROSS_COLOR, lw=1.6, label=f"$c_t$, rolling mean ({P.window})")
ax.plot(t, np.cumsum(c) / t, color=plots.H_COLOR, lw=1.8, label="$h^{(A,B)}_n$ (running mean of $c_t$)")
ax.plot(t, np.cumsum(s) / t, color=plots.L_COLOR, lw=1.6, ls="--", label="$l^B_n$ (running mean of $s_t$)")
ax.set_xlabel("position t (tokens)")
ax.set_ylabel("bits")
ax.set_ylim(0, np.percentile(s, 99) + 1)
ax.set_title(f"A = {A}, B = {B}: {low['prompt_id']}, seed {int(low['seed'])}, mean KL {low['kl']:.2f} bits/token")
ax.legend(loc="upper right", ncol=2)
fig.tight_layout()
save_figure(fig, figures.per_execution("fig08_cross_entropy_profile"),
            f"Per-step cross-entropy c_t of {A}'s lowest-KL text under {B}, its rolling and running means, and "
            "B's surprisal with its running mean.",
            numbers={"h_cross": round(float(low["h_cross"]), 2), "kl": round(float(low["kl"]), 2),
                     "z_cross": round(float(low["z_cross"]), 2)},
            run_ids=[low["run_id"]])

# %% [markdown]
# The numbers the figure shows (rounded).

# %%
print(f"text {low['prompt_id']} seed {int(low['seed'])}, {len(t)} tokens: mean c_t {c.mean():.2f}, "
      f"mean s_t {s.mean():.2f} bits/token, mean KL {low['kl']:.2f}")
print(f"share of steps with KL_t < 0.5 bits: {np.mean(tok['kl'] < 0.5):.0%}; largest c_t {c.max():.1f} bits")
print(f"z^(A,B) {figures.signed(low['z_cross'], 1)}; l^B ends within ±2σ of h^(A,B): {abs(low['z_cross']) <= 2}")
