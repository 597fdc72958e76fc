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
# # Fig 3: every text of model A under model B, against B on its own texts
#
# One point per text: B's final entropy `h` against B's final log-perplexity `l` (under B's sampling
# distribution `q_B`), for A's texts and for B's own texts from the same prompts and seeds; the
# diagonal is `l = h`. Right: the distribution of the final typicality scores `z`, with N(0, 1),
# which B's own texts should follow (AEP) and A's texts need not.

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
source = "smollm2-135m"  # A, the generator: <model>[@t<temperature>][k<top_k>][p<top_p>]
scorer = "gemma-3-270m"  # B, the scorer (scores with its own sampling distribution q_B)
prompts = "p01,p02"  # comma-separated prompt ids of the shared source grid (params/prompts.yaml)
n_seeds = 2  # seeds per prompt and variant (0..n_seeds-1)
max_new_tokens = 64  # tokens per source generation
on_eos = "suppress"  # end-of-text handling while generating: suppress (a warp, part of q), stop, continue
batch_size = 8  # sequences generated together
device = "auto"  # auto (CUDA if present), cpu or cuda
dtype = "auto"  # auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16

# %%
P = aep_lib.params.notebook_params("fig03_cross_scatter", globals())
A, B = P.pair()
store = RunStore(store_dir(P.profile))
runs = comparisons.ensure_comparisons(store, [A, B], P.prompts, P.seeds, P.max_new_tokens, pairs=[(A, B), (B, B)],
                                      batch_size=P.batch_size, device=P.device, dtype=P.dtype)
print(f"{len(runs)} comparison records ({(runs['status'] == 'ok').sum()} ok) for A = {A}, B = {B}")

# %%
records = comparison_tables.compare(store, run_ids=runs["run_id"])
records = records.merge(runs[["run_id", "sigma_samp"]].rename(columns={"sigma_samp": "sigma"}), on="run_id", how="left")
usable = records[records["status"] == "usable"]
other = usable[usable["pair"] == sampling.pair_label(A, B)]
own = usable[usable["pair"] == sampling.pair_label(B, B)]
for _, r in records[records["status"] != "usable"].iterrows():
    print(f"left out: {r['pair']} {r['prompt_id']} seed {r['seed']}: {r['status']}, {r['reason']}")

fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
plots.plot_final_scatter(axes[0], other["h"], other["l"], color=plots.OTHER_COLOR, label=f"B on A's texts (n={len(other)})",
                         sigma=other["sigma"], diagonal=False)
plots.plot_final_scatter(axes[0], own["h"], own["l"], color=plots.OWN_COLOR, label=f"B on its own texts (n={len(own)})",
                         sigma=own["sigma"], marker="s")
axes[0].set_title(f"B = {B}, A = {A}\nfinal entropy vs log-perplexity under B (bars: ±2σ)")
axes[0].legend(loc="upper left")
plots.plot_z_hist(axes[1], own["z"], color=plots.OWN_COLOR, label="B on its own texts")
plots.plot_z_hist(axes[1], other["z"], color=plots.OTHER_COLOR, label="B on A's texts", reference=False)
axes[1].set_title(f"final z under B ({P.max_new_tokens} tokens per text)")
axes[1].legend(loc="upper left")
fig.tight_layout()
numbers = {"mean_z_other": round(float(other["z"].mean()), 2), "mean_z_own": round(float(own["z"].mean()), 2)}
save_figure(fig, figures.per_execution("fig03_cross_scatter"),
            f"Final entropy vs final log-perplexity of {B} on every text of {A} and on its own texts, "
            f"and the distribution of the final z.", numbers=numbers, run_ids=records["run_id"].tolist())

# %% [markdown]
# The numbers the figure shows (rounded).

# %%
for name, df in [("A's texts", other), ("its own texts", own)]:
    print(f"B on {name}: n {len(df)}, mean z {figures.signed(df['z'].mean(), 1)}, "
          f"median z {figures.signed(df['z'].median(), 1)}, "
          f"within ±2σ {np.mean(np.abs(df['z']) <= 2):.0%}, above the diagonal (l > h) {np.mean(df['l'] > df['h']):.0%}, "
          f"mean l - h {figures.signed(df['D'].mean(), 2)} bits/token")
print(f"mean z of B on A's texts above its mean z on its own texts: {other['z'].mean() > own['z'].mean()}")
