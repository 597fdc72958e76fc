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
# # Boredom and confusion: log-perplexity against length across decoding settings
#
# Basu, Ramachandran, Keskar & Varshney, "Mirostat: a neural text decoding algorithm that directly
# controls perplexity" (ICLR 2021, arXiv 2007.14966) describe two traps: with small top-k or top-p the
# log-perplexity of the generated text *falls* as the text grows and the text repeats itself (the
# **boredom** trap); with large ones it *rises* and the text loses coherence (the **confusion** trap);
# only a narrow band of settings keeps it flat, which Mirostat then holds by feedback. Here, per model and
# decoding setting (greedy `k1`, small top-k and top-p, temperature 1 and above): the running
# log-perplexity `l_n` under the model's raw `p` (docs/science.md, bits/token) against `n`, and beside it the
# share of repeated token 4-grams in a trailing window of tokens (`1 - distinct / total`). A setting is
# **flat** when the least-squares slope of `l_n` over the second half of a run (mean over runs) lies within
# `± tolerance` bits/token per 100 tokens, **boredom** below, **confusion** above. These are observations,
# not bounds. The tables come from `aep_lib.analysis.dynamics` (`ensure_setting_runs`, `decoding_dynamics`,
# `setting_summary`, `setting_curves`, `turning_points`).

# %%
from aep_lib.report import figures

figures.setup_notebook()  # before the other imports: some warn as they load

import matplotlib.pyplot as plt
import pandas as pd

import aep_lib.params
from aep_lib.analysis import dynamics
from aep_lib.paths import store_dir
from aep_lib.report import plots
from aep_lib.report.figures import save_figure
from aep_lib.store.run_store import RunStore

# %% tags=["parameters"]
profile = "cpu"  # params profile this execution belongs to (cpu or paper)
models = "smollm2-135m"  # comma-separated generating models
settings = "k1,p0.5,t1,t1.6"  # comma-separated decoding settings: t<temperature>, k<top_k>, p<top_p>, combined t0.7p0.9
prompts = "p01"  # comma-separated prompt ids (params/prompts.yaml)
n_seeds = 1  # generations per prompt and setting (seeds 0..n_seeds-1; a greedy setting only seed 0)
max_new_tokens = 64  # tokens per generation
n_gram = 4  # repetition: n-grams of token ids of this length
window = 32  # repetition: trailing window, in tokens
tolerance = 0.1  # flat: |slope of l_n over the second half| at most this many bits/token per 100 tokens
batch_size = 16  # sequences generated together (the settings share batches)
device = "auto"  # auto (CUDA if present), cpu or cuda
dtype = "auto"  # auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16

# %%
P = aep_lib.params.notebook_params("boredom_confusion", globals())
store = RunStore(store_dir(P.profile))
runs = dynamics.ensure_setting_runs(store, P.models, P.samplings, P.prompts, P.seeds, P.max_new_tokens,
                                    batch_size=P.batch_size, device=P.device, dtype=P.dtype)
dyn = dynamics.decoding_dynamics(store, runs, P.n_gram, P.window)
summary = dynamics.setting_summary(dyn, P.tolerance)
print(f"{len(runs)} generations of {P.max_new_tokens} tokens: {len(P.models)} models x {len(P.settings)} settings x "
      f"{len(P.prompts)} prompts x {P.n_seeds} seeds (greedy settings: seed 0 only)")

# %% [markdown]
# Per model: left, the running `l_n` under the raw `p` (mean over runs) for each setting; right, the
# share of repeated 4-grams in the trailing window. The legend gives each setting's regime of `l_n`.

# %%
curves = dynamics.setting_curves(dyn)
colors = dict(zip(P.settings, plt.get_cmap("coolwarm")([i / max(1, len(P.settings) - 1)
                                                         for i in range(len(P.settings))])))
regimes = summary.set_index(["model", "setting"])["regime"]
fig, axes = plt.subplots(len(P.models), 2, figsize=(11, 3.6 * len(P.models)), squeeze=False)
for (ax_l, ax_r), model in zip(axes, P.models):
    for setting in P.settings:
        c = curves[(curves["model"] == model) & (curves["setting"] == setting)]
        ax_l.plot(c["n"], c["l_n"], color=colors[setting], lw=1.4)
        ax_r.plot(c["n"], c["rep"], color=colors[setting], lw=1.4, label=f"{setting}: {regimes[(model, setting)]}")
    ax_l.axvspan(P.max_new_tokens / 2, P.max_new_tokens, color="#eeeeee", zorder=-2)
    ax_l.set(xlabel="tokens n", ylabel="running l_n under p (bits/token)",
             title=f"{plots.short_name(model)}: log-perplexity (grey: the half the slope is fitted on)")
    ax_r.set(xlabel="tokens n", ylabel=f"repeated {P.n_gram}-grams, last {P.window} tokens",
             title=f"{plots.short_name(model)}: repetition", ylim=(-0.03, 1.03))
    ax_r.legend(loc="upper left", ncol=2, fontsize="x-small", title="setting: regime of l_n", title_fontsize="x-small")
fig.tight_layout()

# %% [markdown]
# Per model and setting: the final `l` and its value at the start of the second half, the final
# repetition share, the slope of `l_n` over the second half (mean over runs, 95% bootstrap CI; bits/token
# per 100 tokens) and the regime; then the band of flat settings and where, along the settings in the
# order given (from cool to hot), `l_n` turns from falling to rising.

# %%
for r in summary.itertuples():
    print(f"{r.model:<14} {r.setting:<6} ({r.n_runs} runs): l {r.l_half:.2f} -> {r.l:.2f} bits/token, repetition "
          f"{r.rep:.2f}, slope {figures.format_interval(r.slope, r.slope_low, r.slope_high)} per 100 tokens -> {r.regime}")
turns = dynamics.turning_points(summary)
for model, g in summary.groupby("model", sort=False):
    flat = g.loc[g["regime"] == "flat", "setting"].tolist()
    print(f"{model}: flat band (|slope| <= {P.tolerance:g}): {', '.join(flat) if flat else 'none of the settings'}")
    for t in turns[turns["model"] == model].itertuples():
        print(f"{model}: l_n turns from falling to rising between {t.below} (slope {figures.signed(t.slope_below, 2)}) "
              f"and {t.above} (slope {figures.signed(t.slope_above, 2)})")
    for r in g.itertuples():
        figures.claim(f"{model} {r.setting}: slope of l_n over the second half, bits/token per 100 tokens ({r.regime})",
                     r.slope)
        figures.claim(f"{model} {r.setting}: final share of repeated {P.n_gram}-grams", r.rep)
save_figure(fig, "boredom_confusion",
            caption=(f"Running log-perplexity l_n under the raw p and the share of repeated {P.n_gram}-grams in the "
                     f"last {P.window} tokens against n, per decoding setting ({', '.join(P.settings)}), "
                     f"{P.max_new_tokens}-token generations; regime by the slope of l_n over the second half."),
            numbers={f"{r.model}:{r.setting}:slope": round(float(r.slope), 3) for r in summary.itertuples()}
            | {f"{r.model}:{r.setting}:repetition": round(float(r.rep), 2) for r in summary.itertuples()}
            | {f"{r.model}:{r.setting}:regime": r.regime for r in summary.itertuples()},
            run_ids=runs["run_id"].tolist())

# %% [markdown]
# ## Against the source
#
# Mirostat's traps are stated for top-k and top-p sampling (its figures: see the paper for the numbers);
# the temperature settings here are the confusion side of this notebook's own sweep.

# %%
source = {"k": "small k: boredom (l falls); large k: confusion (l rises)",
          "p": "small p: boredom (l falls); large p: confusion (l rises)", "t": "not given (see the paper)"}
comparison = pd.DataFrame([{"setting": r.setting, "model": plots.short_name(r.model), "regime here": r.regime,
                            "slope here": round(float(r.slope), 2), "Mirostat": source[r.setting[0]]}
                           for r in summary.itertuples()])
print(comparison.to_string(index=False))
