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
# # Calibration of the entropy rate: a model's own text against human text
#
# Source: Braverman, Chen, Kakade, Narasimhan, Zhang, Zhang, "Calibration, Entropy Rates, and Memory in
# Language Models", ICML 2020 (arXiv 1906.05664). A model is *calibrated* in its entropy rate when the
# text it generates is as unpredictable, to the model itself, as human text is: the entropy rate of its
# generations (`h = mean H_t` under the sampling distribution `q`, bits/token) equals its log-perplexity
# on human text (`l = mean s_t` under the raw `p`). They report that the entropy rate of generations
# drifts upward with the generation's length and exceeds the log-perplexity on human text
# (miscalibration), and propose a one-parameter, temperature-like recalibration.
#
# Here, per model: `h` of its own temperature-1 generations (the shared self grid's untruncated runs)
# against `l` on human text (classic openings and the human halves of the XSum and WritingPrompts sets,
# scored as `memorised_texts` scores them), both over the same positions (the first
# `window_tokens × n_windows` tokens); their gap with a bootstrap CI; the entropy rate at a few sampling
# temperatures against the fixed human `l`, and the temperature where the gap closes (interpolated).
# Everything the small models show is reported as an observation; the one bound is what must hold: the
# entropy rate rises with the temperature. The per-position drift of `H_t` is the `entropy_rate_drift`
# notebook's subject; here panel (a) shows the running `h_n`.

# %%
from aep_lib.report import figures

figures.setup_notebook()  # before the other imports: some warn as they load

import math

import pandas as pd

import aep_lib.params
from aep_lib import corpora
from aep_lib.analysis import entropy_rate, tables
from aep_lib.engine.models import ModelPool
from aep_lib.paths import store_dir
from aep_lib.report import phenomena_plots, plots
from aep_lib.report.figures import save_figure
from aep_lib.runs import comparisons
from aep_lib.store.run_store import RunStore

# %% tags=["parameters"]
profile = "cpu"  # params profile this execution belongs to (cpu or paper)
models = "smollm2-135m,gemma-3-270m"  # comma-separated model names: embedded short names, hub ids or folders
prompts = "p01,p02"  # comma-separated prompt ids from params/prompts.yaml
n_seeds = 3  # generations per model and prompt at temperature 1 without truncation
n_seeds_truncated = 1  # generations per model and prompt with top-p truncation (the shared grid; not used here)
top_p = 0.9  # nucleus mass of the grid's truncated setting
max_new_tokens = 192  # length of every grid generation, in tokens
batch_size = 24  # sequences generated together (both settings of a model in one batch)
device = "auto"  # torch device: auto, cpu, cuda, cuda:1, ...
dtype = "auto"  # model dtype: auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16
classics = "carroll-alice,fitzgerald-gatsby,kjv-genesis"  # comma-separated corpora/<name>.txt, scored from their opening line
news_file = "benchmarks/fast-detect-gpt/exp_main/xsum_gpt2-xl.raw_data.json"  # human news (its original texts), under the data dir
essays_file = "benchmarks/fast-detect-gpt/exp_main/writing_gpt2-xl.raw_data.json"  # human stories (its original texts)
n_human = 3  # texts taken from each of news_file and essays_file
window_tokens = 64  # tokens per window of a human text (of the scorer's own tokenization)
n_windows = 2  # windows per human text; window_tokens x n_windows is the length every rate is read at
reflow = True  # join the hard-wrapped lines of the classics into paragraphs
temperatures = "0.8,1.0,1.2"  # comma-separated sampling temperatures of the sweep (1.0 comes from the grid)
n_seeds_sweep = 1  # generations per model, prompt and temperature in the sweep

# %%
P = aep_lib.params.notebook_params("entropy_rate_calibration", globals())
store = RunStore(store_dir(P.profile))
grid = tables.ensure_self_grid(store, P)
main = grid[grid["setting"] == tables.MAIN]
print(tables.describe_grid(grid))
items = [corpora.classic_text(name, reflowed=P.reflow) for name in P.classics]
items += corpora.benchmark_texts(P.news_file, "news", P.n_human, prefix="xsum")
items += corpora.benchmark_texts(P.essays_file, "essay", P.n_human, prefix="writing")
pool = ModelPool(P.device, P.dtype)
text_runs = [comparisons.ensure_text_scores(store, m, items, P.window_tokens, P.n_windows, pool=pool) for m in P.models]
human = entropy_rate.text_rates(store, pd.concat(text_runs, ignore_index=True))
gen = entropy_rate.generation_rates(store, main, n=P.rate_tokens)
print(f"{len(items)} human texts ({len(P.classics)} classics, {P.n_human} news, {P.n_human} stories), "
      f"scored over their first {P.rate_tokens} tokens; own text: the first {P.rate_tokens} tokens of each "
      "untruncated grid run")

# %% [markdown]
# ## The gap: entropy rate of own text minus log-perplexity of human text
#
# Per model, bits/token with 95% bootstrap CIs (runs and texts resampled independently). A positive gap
# is Braverman et al.'s miscalibration: the generations are more random than human text is to the
# model. `l` of the own text is printed beside `h` (the AEP: they agree).

# %%
gap = entropy_rate.calibration_gap(gen, human, P.models)
for r in gap.itertuples():
    own_l = gen.loc[gen["model"] == r.model, "l"].mean()
    print(f"{plots.short_name(r.model)}: own text h {figures.format_interval(r.h_gen, r.h_low, r.h_high)} "
          f"(its l {own_l:.2f}, {r.n_runs} runs); human text l {figures.format_interval(r.l_human, r.l_low, r.l_high)} "
          f"({r.n_texts} texts)")
    print(f"  gap h - l {figures.format_interval(r.gap, r.gap_low, r.gap_high)} bits/token, ratio h / l {r.ratio:.2f}")
by_group = human.groupby(["model", "group"], sort=False)["l"].mean()
for (model, group), value in by_group.items():
    print(f"  {plots.short_name(model)}: mean l of the {group} texts {value:.2f}")

# %% [markdown]
# ## Temperature: where does the gap close?
#
# The entropy rate of generations at each temperature (the same prompts and seeds; temperature 1 from
# the grid's runs, cut to the same length), against the fixed human log-perplexity at temperature 1.

# %%
seeds = list(range(P.n_seeds_sweep))
sweep = entropy_rate.ensure_temperature_sweep(store, P.models, P.prompts, seeds, P.temperatures, P.rate_tokens,
                                              grid_runs=main, batch_size=P.batch_size, device=P.device, dtype=P.dtype)
sweep_rates = entropy_rate.generation_rates(store, sweep, n=P.rate_tokens)
curve = entropy_rate.temperature_curve(sweep_rates)
closing = entropy_rate.closing_temperature(sweep_rates, human)
for r in curve.itertuples():
    print(f"{plots.short_name(r.model)} T {r.temperature:.1f}: h {figures.format_interval(r.h, r.low, r.high)} "
          f"({r.n_runs} runs)")
for r in closing.itertuples():
    where = {"inside": "inside the sweep", "below": "below the sweep (every T too random)",
             "above": "above the sweep (every T too predictable)"}[r.where]
    print(f"{plots.short_name(r.model)}: the gap closes at T = {figures.fixed(r.temperature)} "
          f"[{figures.fixed(r.low)}, {figures.fixed(r.high)}], {where}; defined in {r.share_defined:.0%} of resamples")

# %% [markdown]
# The figure and the numbers it claims.

# %%
running = entropy_rate.running_means(tables.running_table(store, main, dist="samp"), "h_n")
fig = phenomena_plots.plot_entropy_calibration(running, gap, curve, closing, P.rate_tokens)
numbers, checks = {}, []
for r in gap.itertuples():
    name = plots.short_name(r.model)
    t = curve[curve["model"] == r.model]
    closes = closing.loc[closing["model"] == r.model, "temperature"].iloc[0]
    figures.claim(f"{name}: entropy rate of own text h (bits/token)", r.h_gen)
    figures.claim(f"{name}: log-perplexity of human text l (bits/token)", r.l_human)
    figures.claim(f"{name}: gap h - l (bits/token)", r.gap)
    figures.claim(f"{name}: temperature where the gap closes", closes)
    rise = t["h"].iloc[-1] - t["h"].iloc[0]
    checks.append(figures.claim(f"{name}: h at T {t['temperature'].iloc[-1]:g} minus h at T {t['temperature'].iloc[0]:g}",
                               rise, at_least=0.0))
    numbers |= {f"{name}: h": round(r.h_gen, 2), f"{name}: l human": round(r.l_human, 2),
                f"{name}: gap": round(r.gap, 2), f"{name}: gap CI": [round(r.gap_low, 2), round(r.gap_high, 2)],
                f"{name}: closing T": None if math.isnan(closes) else round(closes, 2)}
print(f"all claims hold: {all(checks)}")
save_figure(fig, "entropy_rate_calibration",
            caption=(f"(a) Running entropy rate h_n of each model's own temperature-1 text (mean over runs, 95% band) "
                     f"against its log-perplexity l on human text (dashed, 95% CI band); (b) the entropy rate over the "
                     f"first {P.rate_tokens} tokens at temperatures {', '.join(f'{t:g}' for t in P.temperatures)} "
                     "(95% CIs) and the temperature where it meets the human l (star)."),
            numbers=numbers, run_ids=grid["run_id"].tolist() + sweep["run_id"].tolist())

# %% [markdown]
# ## Against the source
#
# Braverman et al. measure LSTMs and GPT-2 on their own corpora (Table 1: the perplexity on test text
# against `exp` of the entropy rate of the model's long generations, in perplexity units); the numbers
# here are the embedded models on the texts above, read over their first tokens only, so the two agree
# in units (`gap_bits = log2` of the ratio `= h - l`) but not in setting: compare the direction and size.

# %%
rows = [("entropy rate of generations exceeds log-perplexity on human text", "yes (Table 1)"),
        ("entropy rate of generations drifts upward with the generation's length", "yes (see the paper)"),
        ("a one-parameter, temperature-like recalibration closes the gap", "yes (see the paper)")]
observed = [", ".join(f"{plots.short_name(r.model)}: gap {figures.signed(r.gap, 2)} "
                      f"[{figures.signed(r.gap_low, 2)}, {figures.signed(r.gap_high, 2)}] "
                      f"({entropy_rate.sign_verdict(r.gap_low, r.gap_high)})" for r in gap.itertuples()),
            ", ".join(f"{plots.short_name(m)}: h_n {g['mean'].iloc[min(len(g), P.rate_tokens) - 1]:.2f} at "
                      f"n = {min(len(g), P.rate_tokens)}, {g['mean'].iloc[-1]:.2f} at n = {int(g['n'].iloc[-1])}"
                      for m, g in running.groupby("model", sort=False)),
            ", ".join(f"{plots.short_name(r.model)}: T = {figures.fixed(r.temperature)} ({r.where})"
                      for r in closing.itertuples())]
table = entropy_rate.calibration_comparison(gap, corpus=f"{len(items)} human texts, first {P.rate_tokens} tokens")
print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
print()
print(f"{'finding':<68} {'source':<22} embedded models")
for (finding, source), ours in zip(rows, observed):
    print(f"{finding:<68} {source:<22} {ours}")
