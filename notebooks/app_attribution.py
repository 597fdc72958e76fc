# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Attribution: which model, at which decoding setting, wrote this text?
#
# Each candidate is a model with the warps it samples with (`gemma-3-270m@t0.7`). A text sampled from
# candidate `m` is typical for `m` (`z_m ~ N(0, 1)`, docs/science.md) and drifts for every other
# candidate, so the candidates are ranked by `|z_m|` (the CLT likelihood `phi(z_m)`), with the
# normalised likelihood as confidence (`aep_lib.analysis.attribution`). Every stored generation of every
# candidate is attributed from its first `n` tokens for each length `n`; each candidate re-tokenizes
# the text itself (the text is all the evidence). Second rule: `max_likelihood`, the candidate under
# whose sampling distribution the text has the fewest bits per byte (the Bayes rule when the true
# source is among the candidates; it needs all of them, while each `z` tests one candidate alone).

# %%
from aep_lib.report import figures

figures.setup_notebook(pandas_width=200)  # before the other imports: some warn as they load

import matplotlib.pyplot as plt
import pandas as pd

import aep_lib.params
from aep_lib.analysis import attribution
from aep_lib.core import sampling
from aep_lib.engine.models import ModelPool
from aep_lib.paths import output_dir, store_dir
from aep_lib.report import detection_plots, plots
from aep_lib.report.figures import save_figure
from aep_lib.runs import comparisons
from aep_lib.store.run_store import RunStore

# %% tags=["parameters"]
profile = "cpu"  # params profile this execution belongs to (cpu or paper)
variants = "smollm2-135m,smollm2-135m@t0.7,gemma-3-270m,gemma-3-270m@t0.7"  # comma-separated candidates (also the sources): <model>[@t<T>][k<K>][p<P>]
prompts = "p01,p02"  # comma-separated prompt ids (params/prompts.yaml)
n_seeds = 1  # generations per prompt and variant (seeds 0..n_seeds-1)
lengths = "16,32,64"  # comma-separated text lengths in generated tokens; the longest is the generation length
batch_size = 8  # sequences generated together
device = "auto"  # auto (CUDA if present), cpu or cuda
dtype = "auto"  # auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16

# %%
P = aep_lib.params.notebook_params("app_attribution", globals())
store = RunStore(store_dir(P.profile))
V = sampling.parse_variants(P.variants)
runs = comparisons.ensure_sources(store, V, P.prompts, list(range(P.n_seeds)), max(P.lengths), batch_size=P.batch_size,
                                  device=P.device, dtype=P.dtype)
print(f"{(runs['status'] == 'ok').sum()} stored generations of {len(V)} variants, {max(P.lengths)} tokens each")
cache = output_dir(P.profile) / "cache" / "attribution" / f"n{max(P.lengths)}"
pool = ModelPool(P.device, P.dtype)
table = attribution.attribution_table(store, runs, V, P.lengths, pool=pool, cache=cache)
decisions = pd.concat([attribution.decide(table, m) for m in attribution.METHODS], ignore_index=True)

# %% [markdown]
# ## Accuracy against length (95% Clopper-Pearson intervals)
#
# Chance is `1/len(variants)`; "model" counts a decision as right when the model is right whatever
# the decoding setting.

# %%
labels = [v.label for v in V]
acc = attribution.accuracy_by(decisions, ["method", "length"])
acc_model = attribution.accuracy_by(decisions, ["method", "length"], column="correct_model")
for r, rm in zip(acc.itertuples(), acc_model.itertuples()):
    print(f"{r.method:<10} {r.length:>5} tokens: accuracy {r.accuracy:.2f} [{r.low:.2f}, {r.high:.2f}] (n={r.n}); "
          f"model only {rm.accuracy:.2f} [{rm.low:.2f}, {rm.high:.2f}]")
zsel = decisions[decisions["method"] == "min_abs_z"]
print("mean confidence of the min-|z| choice, right vs wrong:",
      {bool(k): round(float(v), 2) for k, v in zsel.groupby("correct")["confidence"].mean().items()})

# %%
fig, axes = plt.subplots(1, 2 + 1, figsize=(15, 4.2), gridspec_kw={"width_ratios": [1.1, 1, 1]})
ax = axes[0]
for method, g in acc.groupby("method", sort=False):
    ax.errorbar(g["length"], g["accuracy"], yerr=[g["accuracy"] - g["low"], g["high"] - g["accuracy"]], marker="o",
                capsize=3, label=f"{method} (variant)")
for method, g in acc_model.groupby("method", sort=False):
    ax.plot(g["length"], g["accuracy"], ls="--", lw=2.5, alpha=0.5, marker="s", ms=7, mfc="none",
            label=f"{method} (model only)")  # wide, hollow: visible where it lies on the variant line
ax.axhline(1 / len(V), color="0.6", lw=0.8, ls=":", label="chance (variant)")
ax.set(xlabel="text length (generated tokens)", ylabel="attribution accuracy", ylim=(0, 1.05),
       title="accuracy against length")
plots.log_axis(ax, P.lengths)
ax.legend(fontsize=7)
for ax, n in zip(axes[1:], [min(P.lengths), max(P.lengths)]):
    m = attribution.confusion(zsel[zsel["length"] == n], labels)
    detection_plots.plot_confusion(m, ax=ax, title=f"min |z|, {n} tokens")
fig.tight_layout()
numbers = {f"{r.method}@{r.length}": round(float(r.accuracy), 2) for r in acc.itertuples()}
save_figure(fig, "app_attribution", "Attribution by the smallest |z| among candidate models and decoding settings: "
            "accuracy against length (95% CIs) and confusion matrices at the shortest and longest length.",
            numbers=numbers, run_ids=runs["run_id"].tolist())
plt.show()

# %% [markdown]
# The confusion matrix at the longest length (rows: true source, columns: predicted), and one text
# ranked with its confidences.

# %%
print(attribution.confusion(zsel[zsel["length"] == max(P.lengths)], labels).to_string())
example = runs[runs["status"] == "ok"].iloc[0]
ranked = attribution.attribute(str(example["text"]), V, prompt=str(example["prompt_text"]), pool=pool)
print(f"\ntext by {sampling.Variant.of_run(example).label} ({max(P.lengths)} tokens):")
print(ranked[["rank", "candidate", "z", "confidence", "bpb"]].round(2).to_string(index=False))
