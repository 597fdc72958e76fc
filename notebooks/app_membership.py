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
# # Training-data inference: is over-typicality a membership score?
#
# Memorised text is *over-typical*: each token is likelier than the model's average token at that
# position, so the window `z` falls below the self-generated baseline (the model's own samples,
# `z ~ N(0, 1)`). Scores per window of `window_tokens` tokens (`aep_lib.analysis.membership`): `-z`, its
# quantile in the baseline, Min-K%++ and Min-K%. "Members": windows of classic books
# (public domain, on the web many times over, very likely in any pretraining corpus). "Non-members":
# windows of human news (XSum `original` texts) — which are *not* known non-members either: BBC
# articles of 2010-2017 are in web crawls too. The classic/news AUROC therefore measures
# "classic book vs news", which mixes memorisation with genre; what separates the two is reported
# as it is. The corpus windows are scored and stored by `aep_lib.runs.comparisons.ensure_text_scores` (the
# same scoring of external texts as the memorised-texts notebook); the tables come from
# `aep_lib.analysis.comparison_tables` (`membership_groups`, `membership_tests`, `membership_aurocs`).

# %%
from aep_lib.report import figures

figures.setup_notebook(style=None, pandas_width=200)  # before the other imports: some warn as they load

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import aep_lib.params
from aep_lib import corpora
from aep_lib.analysis import comparison_tables, membership
from aep_lib.core import sampling
from aep_lib.core.sampling import Sampling
from aep_lib.paths import store_dir
from aep_lib.report.figures import save_figure
from aep_lib.runs import comparisons
from aep_lib.store.run_store import RunStore

# %% tags=["parameters"]
profile = "cpu"  # params profile this execution belongs to (cpu or paper)
models = "smollm2-135m"  # comma-separated scoring models (raw p)
classics = "carroll-alice,fitzgerald-gatsby,austen-pride-and-prejudice,austen-emma,melville-moby-dick,dickens-tale-of-two-cities,kjv-genesis"  # comma-separated corpora/<name>.txt, from their opening line
news_file = "benchmarks/fast-detect-gpt/exp_main/xsum_gpt2-xl.raw_data.json"  # human news: its "original" texts (data dir)
n_news = 8  # news texts (the first n)
window_tokens = 32  # tokens per window (the scorer's own tokenization)
n_windows = 2  # windows per text, from its start (fewer when the text is shorter)
prompts = "p01,p02"  # comma-separated prompt ids of the self-generated baseline (params/prompts.yaml)
n_seeds = 2  # baseline generations per prompt (seeds 0..n_seeds-1)
max_new_tokens = 64  # tokens per baseline generation (a multiple of window_tokens wastes nothing)
min_k = 0.2  # Min-K% and Min-K%++: share of least likely tokens
batch_size = 8  # sequences generated together
device = "auto"  # auto (CUDA if present), cpu or cuda
dtype = "auto"  # auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16

# %%
P = aep_lib.params.notebook_params("app_membership", globals())
store = RunStore(store_dir(P.profile))
items = [corpora.classic_text(name) for name in P.classics]
items += corpora.benchmark_texts(P.news_file, "news", P.n_news, prefix="xsum")
frames, run_ids = [], []
for model in P.models:
    text_runs = comparisons.ensure_text_scores(store, model, items, P.window_tokens, P.n_windows, device=P.device,
                                               dtype=P.dtype)
    gens = comparisons.ensure_sources(store, [sampling.Variant(model, Sampling())], P.prompts, list(range(P.n_seeds)),
                                      P.max_new_tokens, batch_size=P.batch_size, device=P.device, dtype=P.dtype)
    run_ids += text_runs["run_id"].tolist() + gens["run_id"].tolist()
    frames.append(membership.text_windows(store, text_runs, P.window_tokens, P.min_k))
    frames.append(membership.generation_windows(store, gens, P.window_tokens, P.min_k))
windows = comparison_tables.membership_windows(pd.concat(frames, ignore_index=True))  # + opening, baseline_quantile
print(windows.groupby(["model", "group"]).size().rename("windows").to_string())

# %% [markdown]
# ## Window z against the self-generated baseline
#
# Mean window `z` per group with a 95% bootstrap CI, the share of windows below the baseline's 5%
# quantile, and a test of classic vs news (Welch and Mann-Whitney, effect sizes).

# %%
for r in comparison_tables.membership_tests(windows, "classic", "news").itertuples():
    print(f"{r.model}: classic - news mean z {r.diff:+.1f} [{r.diff_low:+.1f}, {r.diff_high:+.1f}], "
          f"Welch p {r.p_welch:.2g}, Mann-Whitney p {r.p_mannwhitney:.2g}, Cohen's d {r.cohens_d:+.1f}, "
          f"rank-biserial {r.r_rb:+.2f}; robust at 5%: {r.robust}")
groups = comparison_tables.membership_groups(windows)
print(pd.DataFrame({"model": groups["model"], "group": groups["group"], "windows": groups["windows"],
                    "mean z": [figures.format_interval(m, lo, hi)
                               for m, lo, hi in zip(groups["z_mean"], groups["z_low"], groups["z_high"])],
                    "below baseline 5%": [round(v, 2) for v in groups["below_baseline_5pct"]]}).to_string(index=False))

# %% [markdown]
# ## Membership AUROC: classic windows (positive) against news windows
#
# Each score oriented so that higher = member-like; 95% bootstrap CIs over windows. Windows of one
# book are not independent, so the CIs are optimistic; with 7 books, read them as a lower bound on
# the uncertainty.

# %%
aucs = comparison_tables.membership_aurocs(windows, n_resamples=1000).round(2)
print(aucs.to_string(index=False))

# %%
fig, axes = plt.subplots(1, len(P.models), figsize=(6.5 * len(P.models), 4), squeeze=False)
colors = {"self": "#1b9e77", "classic": "#7570b3", "news": "#d95f02"}
means = comparison_tables.window_group_means(windows, list(colors)).set_index(["model", "group"])
for ax, (model, g) in zip(axes[0], windows.groupby("model", sort=False)):
    for x, group in enumerate(colors):
        z = g.loc[g["group"] == group, "z"].to_numpy()
        ax.scatter(x + np.random.default_rng(x).uniform(-0.15, 0.15, len(z)), z, s=14, alpha=0.75, color=colors[group])
        m = means.loc[(model, group)]
        ax.errorbar(x + 0.3, m["mean"], yerr=m["half_width"], fmt="o", color="black", capsize=3)
    op = g[g["opening"]]
    ax.scatter(np.ones(len(op)), op["z"], s=40, facecolors="none", edgecolors="black", label="book openings")
    ax.axhspan(-2, 2, color="0.92", zorder=-2, label="N(0,1) ±2")
    ax.set_xticks([0, 1, 2], ["self-generated", "classic books", "news (XSum)"])
    ax.set(ylabel=f"window z ({P.window_tokens} tokens)", title=model)
    ax.legend(fontsize=7)
fig.tight_layout()
numbers = {f"{r.model}:{r.score}:{r.positives}": r.AUROC for r in aucs.itertuples()}
save_figure(fig, "app_membership", f"Window z ({P.window_tokens} tokens) of classic books and human news "
            "against the model's own samples (mean ± 95% CI); circles: the books' opening windows.",
            numbers=numbers, run_ids=run_ids)
plt.show()

# %% [markdown]
# What this can and cannot show: the claims, as booleans.

# %%
for model, g in windows.groupby("model", sort=False):
    a = aucs[(aucs["model"] == model) & (aucs["positives"] == "all classic windows")].set_index("score")
    op = g[g["opening"]]
    print(f"{model}: classic windows more over-typical than news (over_typicality AUROC CI above 0.5): "
          f"{bool(a.loc['over_typicality', 'low'] > 0.5)}; Min-K%++ CI above 0.5: {bool(a.loc['min_k_pp', 'low'] > 0.5)}; "
          f"book openings below the baseline's 5% quantile: {int((op['baseline_quantile'] < 0.05).sum())} of {len(op)}")
