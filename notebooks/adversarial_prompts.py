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
# # Adversarial prompts: can a prompt move the AEP, or hide which model wrote a text?
#
# The study's stated future aim (Mudumbai and Bell, "Slaves to the Law of Large Numbers: An Asymptotic
# Equipartition Property for Perplexity in Generative Language Models", arXiv 2405.13798): prompts
# written against the detector. Here four of them (`params/prompts.yaml`, p07-p10): write
# unpredictably, write like a human, paraphrase a given passage, repeat a sentence over and over.
#
# What must hold: under the model's own sampling distribution `q`, `z_n = (l_n - h_n) / σ_n` is
# approximately N(0, 1) whatever the prompt (the AEP conditions on the prompt; it makes no assumption
# about it). So the share of runs with final `|z| <= 2` must reach what N(0, 1) gives with that many
# runs (`entropy_rate.clt_share_bound`: the `alpha` quantile of Binomial(n, 0.954) over n): the bound.
# What a prompt may change: how the *other* model sees the text (`z` under its `q` and raw `p`, the
# bits-per-byte gap; `comparisons.ensure_comparisons`) and whether attribution (`aep_lib.analysis.attribution`,
# both rules) still names the right model. These are observations, against the baseline prompts pooled.

# %%
from aep_lib.report import figures

figures.setup_notebook(pandas_width=200)  # before the other imports: some warn as they load

import pandas as pd

import aep_lib.params
from aep_lib.analysis import attribution, entropy_rate, tables
from aep_lib.core.sampling import Sampling, Variant
from aep_lib.corpora import load_prompts
from aep_lib.engine.models import ModelPool
from aep_lib.paths import output_dir, store_dir
from aep_lib.report import phenomena_plots, plots
from aep_lib.report.figures import save_figure
from aep_lib.runs import comparisons
from aep_lib.store.run_store import RunStore

# %% tags=["parameters"]
profile = "cpu"  # params profile this execution belongs to (cpu or paper)
models = "smollm2-135m,gemma-3-270m"  # comma-separated generating models (temperature 1), each scored by the others
prompts = "p07,p08,p09,p10"  # comma-separated adversarial prompt ids (params/prompts.yaml)
baseline_prompts = "p01,p02"  # comma-separated ordinary prompt ids, pooled as the baseline
n_seeds = 2  # generations per model and prompt (seeds 0..n_seeds-1)
max_new_tokens = 64  # tokens per generation; attribution reads the whole text
on_eos = "suppress"  # end-of-text handling: suppress (a warp, part of q), stop, continue
alpha = 0.01  # risk of the bound on the share of runs within 2 sigma under q
batch_size = 16  # sequences generated together (adversarial and baseline texts of a model in one batch)
device = "auto"  # auto (CUDA if present), cpu or cuda
dtype = "auto"  # auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16

# %%
P = aep_lib.params.notebook_params("adversarial_prompts", globals())
store = RunStore(store_dir(P.profile))
texts = load_prompts()
for pid in P.prompts:
    print(f"{pid}: {texts[pid]!r}")
V = [Variant(m, Sampling(on_eos=P.on_eos)) for m in P.models]
all_prompts = P.baseline_prompts + P.prompts
pool = ModelPool(P.device, P.dtype)
cross_pairs = [(a, b) for a in V for b in V if a != b]
records = comparisons.ensure_comparisons(store, V, all_prompts, P.seeds, P.max_new_tokens, pairs=cross_pairs,
                                         batch_size=P.batch_size, device=P.device, dtype=P.dtype, pool=pool)
sources = comparisons.ensure_sources(store, V, all_prompts, P.seeds, P.max_new_tokens, batch_size=P.batch_size,
                                     device=P.device, dtype=P.dtype)
failed = records[records["status"] != "ok"]
print(f"{(sources['status'] == 'ok').sum()} generations of {P.max_new_tokens} tokens, {(records['status'] == 'ok').sum()} "
      f"cross scorings ({len(failed)} failed)")
order = ["baseline", *P.prompts]

# %% [markdown]
# ## Under the model's own `q`: the AEP whatever the prompt
#
# Per prompt (models pooled; the baseline prompts pooled): runs, the share of runs with final `|z| <= 2`,
# the share of positions with `|z_n| <= 2` (mean over runs), mean `z`, and the share N(0, 1) reaches
# with probability `1 - alpha` with that many runs (`expected_at_least`; the expected share is 0.954).

# %%
finals = tables.run_summaries(store, sources[sources["status"] == "ok"])
finals = entropy_rate.label_prompts(finals[finals["dist"] == "samp"], sources, P.baseline_prompts)
shares = entropy_rate.prompt_shares(finals, by=["prompt_group"], alpha=P.alpha)
shares_model = entropy_rate.prompt_shares(finals, by=["prompt_group", "model"], alpha=P.alpha)
for r in shares.itertuples():
    print(f"{r.prompt_group:<9} runs {r.n_runs:>3}  |z| <= 2: {r.share_z2:.2f} (at least {r.expected_at_least:.2f} "
          f"expected)  positions within 2 sigma {r.share_positions:.2f}  mean z {figures.signed(r.mean_z, 2)}")
for r in shares_model.itertuples():
    print(f"  {r.prompt_group:<9} {plots.short_name(r.model):<14} runs {r.n_runs:>3}  |z| <= 2: {r.share_z2:.2f}  "
          f"positions {r.share_positions:.2f}  mean z {figures.signed(r.mean_z, 2)}  mean D {figures.signed(r.mean_D, 2)}")

# %% [markdown]
# ## Under the other model: how far does a prompt move the text?
#
# Per source model and prompt group: the mean final `z` of its texts under its own raw `p`, under the
# other model's `q` and raw `p`, and the bits-per-byte gap (other − own, same characters), with 95%
# bootstrap CIs over texts; then each adversarial prompt against the baseline (Welch and Mann-Whitney,
# Holm-corrected over every row).

# %%
per_text = entropy_rate.label_prompts(entropy_rate.cross_view(sources, records), sources, P.baseline_prompts)
metrics = {"z_own_p": "z under its own p", "z_other_q": "z under the other's q", "z_other_p": "z under the other's p",
           "bpb_gap": "bits/byte, other - own"}
cells = tables.group_cis(per_text, ["model", "prompt_group"], metrics, n_resamples=1000)
for r in cells.itertuples():
    print(f"{plots.short_name(r.model):<14} {r.prompt_group:<9} {metrics[r.metric]:<24} "
          f"{figures.signed(r.mean, 2)} [{figures.signed(r.low, 2)}, {figures.signed(r.high, 2)}] (n={r.n})")
shifts = tables.shift_tests(per_text, "baseline", order, ("z_other_q", "bpb_gap"), by="model", setting="prompt_group")
print()
for r in shifts.itertuples():
    print(f"{plots.short_name(r.model):<14} {r.setting:<5} {r.metric:<9} shift {figures.signed(r.diff, 2)}, "
          f"Holm p {r.p_welch_holm:.2g} / {r.p_mw_holm:.2g}, robust {r.robust}")

# %% [markdown]
# ## Attribution per prompt
#
# Every text re-scored by every model (the text is all the evidence), the author chosen by the smallest
# `|z|` and by the most likely (fewest bits per byte); accuracy per prompt group with Clopper-Pearson 95%
# intervals. Chance is `1 / len(models)`.

# %%
cache = output_dir(P.profile) / "cache" / "attribution" / f"n{P.max_new_tokens}"
scores = attribution.attribution_table(store, sources, V, [P.max_new_tokens], pool=pool, cache=cache)
decisions = pd.concat([attribution.decide(scores, m) for m in attribution.METHODS], ignore_index=True)
decisions = entropy_rate.label_prompts(decisions, sources, P.baseline_prompts)
accuracy = attribution.accuracy_by(decisions, ["method", "prompt_group"], column="correct_model")
for r in accuracy.itertuples():
    print(f"{r.method:<15} {r.prompt_group:<9} accuracy {r.accuracy:.2f} [{r.low:.2f}, {r.high:.2f}] (n={r.n})")

# %% [markdown]
# The figure and the numbers it claims: the bound under `q` per prompt group (it must hold), the rest
# observations.

# %%
fig = phenomena_plots.plot_adversarial_prompts(per_text, accuracy, order, P.models)
checks, numbers = [], {}
for r in shares.itertuples():
    checks.append(figures.claim(f"{r.prompt_group}: share of runs with |z| <= 2 under q (n = {r.n_runs})", r.share_z2,
                               at_least=r.expected_at_least))
    numbers[f"{r.prompt_group}: share |z| <= 2 under q"] = round(r.share_z2, 2)
adversarial = finals[finals["prompt_group"] != "baseline"]
pooled = entropy_rate.prompt_shares(adversarial.assign(all="adversarial"), by=["all"], alpha=P.alpha).iloc[0]
checks.append(figures.claim(f"all adversarial prompts: share of runs with |z| <= 2 under q (n = {pooled.n_runs})",
                           pooled.share_z2, at_least=pooled.expected_at_least))
other = cells[cells["metric"] == "z_other_q"]
for r in other.itertuples():
    figures.claim(f"{plots.short_name(r.model)} text, {r.prompt_group}: mean z under the other model's q", r.mean)
    numbers[f"{plots.short_name(r.model)}:{r.prompt_group}: z other"] = round(r.mean, 2)
for r in accuracy[accuracy["method"] == "max_likelihood"].itertuples():
    figures.claim(f"{r.prompt_group}: attribution accuracy (max likelihood)", r.accuracy)
    numbers[f"{r.prompt_group}: attribution (max likelihood)"] = round(r.accuracy, 2)
print(f"all claims hold: {all(checks)}")
save_figure(fig, "adversarial_prompts",
            caption=(f"Texts of {', '.join(plots.short_name(m) for m in P.models)} after adversarial prompts "
                     f"({', '.join(P.prompts)}) and the baseline prompts ({', '.join(P.baseline_prompts)}), "
                     f"{P.max_new_tokens} tokens: (a) final z under the model's own q (grey: ±2); (b) z under the "
                     "other model's q; (c) attribution accuracy per prompt (95% Clopper-Pearson)."),
            numbers=numbers, run_ids=sources["run_id"].tolist() + records["run_id"].tolist())

# %% [markdown]
# ## Against the source
#
# The study states adversarial prompts as future work and gives no numbers for them.

# %%
print(f"{'quantity':<58} {'source':<12} embedded models")
print(f"{'share of runs with |z| <= 2 under q, adversarial prompts':<58} {'not given':<12} {pooled.share_z2:.2f} "
      f"(n = {pooled.n_runs}; N(0, 1) expects 0.95)")
for r in accuracy[accuracy["method"] == "max_likelihood"].itertuples():
    print(f"{'attribution accuracy (max likelihood), ' + r.prompt_group:<58} {'not given':<12} {r.accuracy:.2f} "
          f"[{r.low:.2f}, {r.high:.2f}]")
