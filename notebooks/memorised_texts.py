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
# # Memorised texts: classics and human writing against each model's own text
#
# Training-data inference by over-typicality (docs/science.md): text a model has memorised is more
# predictable than the model's own entropy says, so its log-perplexity sits *below* its entropy,
# `z << 0`, several σ below the self-generated baseline. Each model scores, under its raw `p`, the
# opening windows (a fixed number of its own tokens) of classic books from the data directory
# (`$AEP_DATA_DIR/corpora`) and human news and stories (`$AEP_DATA_DIR/benchmarks`, the `original`
# texts of fast-detect-gpt's XSum and WritingPrompts sets); the baseline is the same statistic on
# windows of the model's own temperature-1 generations. What the small models show is reported as
# it is. The windows and the table come from `aep_lib.analysis.comparison_tables` (`text_window_summaries`,
# `self_baseline_windows`, `memorisation_table`).

# %%
from aep_lib.report import figures

figures.setup_notebook()  # before the other imports: some warn as they load

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import aep_lib.params
from aep_lib import corpora
from aep_lib.analysis import comparison_tables
from aep_lib.core import sampling
from aep_lib.core.sampling import Sampling
from aep_lib.paths import store_dir
from aep_lib.report import plots
from aep_lib.report.figures import save_figure
from aep_lib.runs import comparisons
from aep_lib.store.run_store import RunStore

# %% tags=["parameters"]
profile = "cpu"  # params profile this execution belongs to (cpu or paper)
models = "smollm2-135m,gemma-3-270m"  # comma-separated scorer models (raw p)
classics = "carroll-alice,fitzgerald-gatsby,kjv-genesis"  # comma-separated corpora/<name>.txt, scored from their opening line
news_file = "benchmarks/fast-detect-gpt/exp_main/xsum_gpt2-xl.raw_data.json"  # human news (its "original" texts), under the data dir
essays_file = "benchmarks/fast-detect-gpt/exp_main/writing_gpt2-xl.raw_data.json"  # human stories/essays (its "original" texts)
n_human = 3  # texts taken from each of news_file and essays_file
window_tokens = 64  # tokens per window (of the scorer's own tokenization)
n_windows = 2  # windows per classic, from its opening on (human texts: as many as fit, at most this)
reflow = True  # join the hard-wrapped lines of the classics into paragraphs
prompts = "p01,p02"  # comma-separated prompt ids of the shared source grid (params/prompts.yaml)
n_seeds = 2  # seeds per prompt and variant (0..n_seeds-1)
max_new_tokens = 64  # tokens per source generation
on_eos = "suppress"  # end-of-text handling while generating: suppress (a warp, part of q), stop, continue
batch_size = 8  # sequences generated together
device = "auto"  # auto (CUDA if present), cpu or cuda
dtype = "auto"  # auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16

# %%
P = aep_lib.params.notebook_params("memorised_texts", globals())
store = RunStore(store_dir(P.profile))
items = [corpora.classic_text(name, reflowed=P.reflow) for name in P.classics]
items += corpora.benchmark_texts(P.news_file, "news", P.n_human, prefix="xsum")
items += corpora.benchmark_texts(P.essays_file, "essay", P.n_human, prefix="writing")
windows, baseline, run_ids = [], [], []
for model in P.models:
    text_runs = comparisons.ensure_text_scores(store, model, items, P.window_tokens, P.n_windows, device=P.device,
                                               dtype=P.dtype)
    run_ids += text_runs["run_id"].tolist()
    for _, run in text_runs[text_runs["status"] != "ok"].iterrows():
        print(f"{model}: {run['text_id']} failed: {str(run['error']).splitlines()[0]}")
    windows.append(comparison_tables.text_window_summaries(store, text_runs, P.window_tokens))
    gens = comparisons.ensure_sources(store, [sampling.Variant(model, Sampling(on_eos=P.on_eos))], P.prompts, P.seeds,
                                      P.max_new_tokens, batch_size=P.batch_size, device=P.device, dtype=P.dtype)
    run_ids += gens["run_id"].tolist()
    baseline.append(comparison_tables.self_baseline_windows(store, gens, P.window_tokens).assign(group="self"))
windows, baseline = pd.concat(windows, ignore_index=True), pd.concat(baseline, ignore_index=True)
print(f"{len(windows)} windows of {P.window_tokens} tokens from {len(items)} texts; "
      f"{len(baseline)} self-generated baseline windows")

# %% [markdown]
# Per model: `z` of every window (one point each), the self-generated baseline (mean ± 2 sd of its
# windows, grey) and the N(0, 1) band of the AEP (dotted).

# %%
order = [i.text_id for i in items if i.group == "classic"] + ["news", "essay", "self-generated"]
fig, axes = plt.subplots(len(P.models), 1, figsize=(11, 3.4 * len(P.models)), squeeze=False)
colors = {"classic": plots.CROSS_COLOR, "news": plots.OTHER_COLOR, "essay": "#e7298a", "self": plots.OWN_COLOR}
band = comparison_tables.baseline_band(baseline).set_index("model")
rng = np.random.default_rng(0)
for ax, model in zip(axes[:, 0], P.models):
    base = baseline[baseline["model"] == model]["z"]
    mean_b, sd_b = band.loc[model, "z"], band.loc[model, "z_sd"]
    ax.axhspan(mean_b - 2 * sd_b, mean_b + 2 * sd_b, color="#dddddd", zorder=-2, label="self baseline ±2 sd")
    ax.axhline(mean_b, color="#666666", lw=0.8)
    for s in (-2, 2):
        ax.axhline(s, color="black", lw=0.6, ls=":")
    w = windows[windows["model"] == model]
    for x, name in enumerate(order):
        if name == "self-generated":
            z, group = base.to_numpy(), "self"
        elif name in ("news", "essay"):
            z, group = w.loc[w["group"] == name, "z"].to_numpy(), name
        else:
            z, group = w.loc[w["text_id"] == name, "z"].to_numpy(), "classic"
        ax.scatter(x + rng.uniform(-0.15, 0.15, len(z)), z, s=18, color=colors[group], alpha=0.8)
    ax.set_xticks(range(len(order)), order, fontsize=8, rotation=25, ha="right")
    ax.set_ylabel(f"window z ({P.window_tokens} tokens)")
    ax.set_title(f"{model}")
    ax.legend(loc="lower right")
fig.tight_layout()

classics = order[:-3]
table = comparison_tables.memorisation_table(windows, baseline, classics, ("news", "essay"), models=P.models)
save_figure(fig, "memorised_texts",
            f"Window z ({P.window_tokens} tokens) of classic openings and human news/stories under each model's "
            "raw p, against windows of the model's own temperature-1 text (grey: mean ± 2 sd).",
            numbers={f"{r.model}:{r.text}": round(float(r.z), 1) for r in table.itertuples()},
            run_ids=run_ids)

# %% [markdown]
# Per model and text: mean window `z`, mean `l - h` (bits/token) and where the text's mean `z` lies
# relative to the self-generated baseline, in baseline standard deviations (negative: below, the
# direction of memorisation), rounded.

# %%
for model, g in table.groupby("model", sort=False):
    print(model)
    for r in g.itertuples():
        print(f"  {r.text:<28} windows {r.windows:>2}  mean z {figures.signed(r.z, 1):>6}  l-h {figures.signed(r.D, 2)}  "
              f"vs baseline {figures.signed(r.sd_from_baseline, 1)} sd")
    classics_ = g[g["text"].isin(classics)]
    print(f"  classics more than 2 sd below the baseline: {int((classics_['sd_from_baseline'] < -2).sum())} of {len(classics_)}")
