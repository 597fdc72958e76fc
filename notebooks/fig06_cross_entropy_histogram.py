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
# # Fig 6: the cross-entropy `h^(A,B)` over every comparison, regimes marked
#
# Every ordered pair of the profile's variants (both directions, and each against itself as the
# control) scores every source text. Where A and B share a vocabulary (checked: identical
# token-to-id maps) the joint pass gives the empirical cross-entropy `h^(A,B)` of A's sampling
# distribution under B; left, its histogram with the low / mid / high regimes of the parameters.
# Right: B's own divergence `l^B - h^B`, defined for every usable pair, tokenizers shared or not.
# Records that cannot be aggregated are counted with their reason (the printed report is what
# `aep compare` prints for this grid).

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
variants = "smollm2-135m,gemma-3-270m,gemma-3-270m@t0.7p0.9"  # comma-separated variants; every ordered pair is compared
prompts = "p01,p02"  # comma-separated prompt ids of the shared source grid (params/prompts.yaml)
n_seeds = 2  # seeds per prompt and variant (0..n_seeds-1)
max_new_tokens = 64  # tokens per source generation
on_eos = "suppress"  # end-of-text handling while generating: suppress (a warp, part of q), stop, continue
batch_size = 8  # sequences generated together
device = "auto"  # auto (CUDA if present), cpu or cuda
dtype = "auto"  # auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16
low_below = 2.0  # h^(A,B) below this many bits/token: the low-divergence regime
high_above = 4.0  # h^(A,B) above this many bits/token: the high-divergence regime
bins = 20  # histogram bins

# %%
P = aep_lib.params.notebook_params("fig06_cross_entropy_histogram", globals())
V = sampling.parse_variants(P.variants, P.on_eos)
store = RunStore(store_dir(P.profile))
runs = comparisons.ensure_comparisons(store, V, P.prompts, P.seeds, P.max_new_tokens, batch_size=P.batch_size,
                                      device=P.device, dtype=P.dtype)
records = comparison_tables.compare(store, run_ids=runs["run_id"])
print(figures.format_report(records))

# %%
usable = records[records["status"] == "usable"]
joint = usable[usable["mode"] == "joint"]
fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
plots.plot_regime_histogram(axes[0], joint, "h_cross", P.low_below, P.high_above, P.bins,
                            xlabel="$h^{(A,B)}$: cross-entropy of $q_A$ under $q_B$ (bits/token)")
axes[0].set_title(f"{len(joint)} shared-vocabulary comparisons")
axes[0].legend(title="A -> B", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
self_pair = usable["self_pair"].astype(bool)
plots.plot_d_hist(axes[1], usable.loc[~self_pair, "D"], bins=np.linspace(usable["D"].min(), usable["D"].max(), P.bins + 1),
                  color=plots.OTHER_COLOR, label="B on another variant's text", alpha=0.7)
plots.plot_d_hist(axes[1], usable.loc[self_pair, "D"], bins=np.linspace(usable["D"].min(), usable["D"].max(), P.bins + 1),
                  color=plots.OWN_COLOR, label="B on its own text (A = B)", alpha=0.7)
axes[1].set_xlabel("$l^B - h^B$ (bits/token)")
axes[1].set_ylabel("comparisons")
axes[1].set_title(f"{len(usable)} usable comparisons, all pairs")
axes[1].legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
fig.tight_layout()
regime = np.where(joint["h_cross"] < P.low_below, "low", np.where(joint["h_cross"] > P.high_above, "high", "mid"))
counts = {k: int((regime == k).sum()) for k in ("low", "mid", "high")}
summary = comparison_tables.summarize_comparisons(records).set_index("pair")
save_figure(fig, figures.per_execution("fig06_cross_entropy_histogram"),
            "Histogram of the empirical cross-entropy h^(A,B) over every shared-vocabulary comparison (regimes "
            "marked), and of l^B - h^B over every usable comparison.",
            numbers={"n_usable": int(summary.loc["overall", "n_usable"]),
                     "h_cross_mean": round(float(summary.loc["overall", "h_cross_mean"]), 2), **counts},
            run_ids=records["run_id"].tolist())

# %% [markdown]
# The regimes and, per pair, the mean cross-entropy and mean KL (rounded).

# %%
print("regimes of h^(A,B): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
for pair, g in joint.groupby("pair"):
    print(f"{pair}: mean h^(A,B) {g['h_cross'].mean():.2f}, mean KL {g['kl'].mean():.2f} bits/token, "
          f"mean z^(A,B) {figures.signed(g['z_cross'].mean(), 1)}")
print(f"self pairs have KL = 0: {bool(np.allclose(joint.loc[joint['self_pair'].astype(bool), 'kl'], 0, atol=1e-6))}")
