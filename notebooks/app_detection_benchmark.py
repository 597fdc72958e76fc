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
# # Detecting machine text: zero-shot detectors on length-matched pairs, and calibrated decisions
#
# Human texts (`original`) against machine texts (`sampled`) of the fast-detect-gpt benchmark sets
# (GPT-4 / GPT-3.5 continuations of XSum news, WritingPrompts stories and PubMedQA answers) and the
# Binoculars PubMed file (Falcon-7B). Every text is scored ONCE by each scoring model (its raw `p`,
# only after the prefix the two texts of a pair share, at most `max_tokens` tokens); all detectors
# come from that one per-token table (`aep_lib.analysis.detect`).
#
# **Length confound.** The two texts of a pair differ in length, and several scores drift with length
# (the zlib ratio most: zlib compresses a longer text better). An unmatched evaluation then measures the
# data set as much as the detector. So both texts of each pair are cut to the same number of scored
# tokens (the shorter one's; exact, a causal model does not look ahead) before any metric, and two zlib
# baselines are shown under the same matching: `zlib_ratio` (model bits over zlib bits) and `zlib_bpb`
# (zlib bits per byte, no model at all; its direction, machine text more compressible, was fixed on the
# GPT-2 XL / GPT-Neo sets, which are not evaluated here). Where the model-free one still separates the
# classes, the two sides of the set differ in ways no detector needs a language model to see.
#
# Per set and scorer: AUROC and TPR at 1% and 5% FPR with 95% bootstrap CIs (texts resampled within each
# class), detectors oriented in advance. Then **decisions**: thresholds calibrated per length bin on human
# text (`aep_lib.analysis.calibration`, as `aep detect` uses them), evaluated **leave-one-source-out**: each set is
# decided with thresholds from the human texts of the sets of the *other* generators (calibration half
# only, less any text the test set shares), and its measured FPR and TPR are reported.
#
# Sources: Fast-DetectGPT (Bao et al., arXiv:2310.05130; with one scoring model and no reference on
# its vocabulary the analytic criterion is its white-box form, exactly `-z`), Binoculars (Hans et al.,
# arXiv:2401.12070; `l / h` with A = B), DetectGPT's baselines (Mitchell et al., arXiv:2301.11305),
# GLTR (Gehrmann et al., arXiv:1906.04043), Min-K%++ (Zhang et al., arXiv:2404.02936). Their numbers are
# for much larger scoring models and unmatched lengths: see the papers; none is compared here.
# `n_texts = 0` runs the full sets.

# %%
from aep_lib.report import figures

figures.setup_notebook(pandas_width=200, pandas_max_columns=20)  # before the other imports

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import HTML, display

import aep_lib.params
from aep_lib import corpora
from aep_lib.analysis import calibration, calibration_checks, detect, length_bins
from aep_lib.engine.models import load_tokenizer, resolved_dtype
from aep_lib.paths import output_dir
from aep_lib.report import detection_plots
from aep_lib.report.figures import format_interval, save_figure
from aep_lib.report.tokenview import save_token_view, token_view

# %% tags=["parameters"]
profile = "cpu"  # params profile this execution belongs to (cpu or paper)
models = "smollm2-135m"  # comma-separated scoring models (embedded short names, hub ids or folders)
reference = ""  # reference model of Fast-DetectGPT/Binoculars, for the scorers on its vocabulary (others, and "": the scorer itself)
datasets = "xsum_gpt-4,pubmed_falcon-7b"  # comma-separated benchmark names (aep_lib.corpora.BENCHMARKS)
n_texts = 12  # pairs (human + machine) per dataset, the first n; 0 for all
max_tokens = 128  # scored tokens per text at most (after the shared prefix)
min_k = 0.2  # Min-K% and Min-K%++: share of least likely tokens
n_resamples = 1000  # bootstrap resamples for the CIs
alpha = 0.05  # the second target false-positive rate of the calibrated decisions (the first is 0.01)
calib_frac = 0.5  # share of each set's human texts that may calibrate (the rest is only ever tested)
seed = 0  # seed of the bootstrap and of the calibration split
device = "auto"  # auto (CUDA if present), cpu or cuda
dtype = "auto"  # auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16

# %%
P = aep_lib.params.notebook_params("app_detection_benchmark", globals())
cache_dir = output_dir(P.profile) / "cache" / "detect"
scored = {m: detect.benchmark_tables(P.datasets, m, P.n_texts, P.max_tokens, P.min_k, P.reference or None, cache_dir,
                                     P.device, P.dtype) for m in P.models}
scores = pd.concat([s for s, _, _ in scored.values()], ignore_index=True)
matched = pd.concat([detect.matched_length_scores(*scored[m], k=P.min_k) for m in P.models], ignore_index=True)
lengths = detect.length_summary(scores, matched)
figures.claim("share of matched pairs whose two texts have equal scored lengths", lengths["equal_share"].min(),
             at_least=1.0)
print(lengths.to_string(index=False))

# %% [markdown]
# ## Unmatched against length-matched: AUROC
#
# The same detectors before and after cutting both texts of each pair to one length. A detector whose
# AUROC falls with matching was partly measuring length.

# %%
shown = ["fast_detectgpt", "binoculars", "log_likelihood", "log_rank", "min_k_pp", "zlib_ratio", "zlib_bpb"]
unmatched_table = detect.evaluate(scores, shown, n_resamples=P.n_resamples, seed=P.seed)
table = detect.evaluate(matched, shown, n_resamples=P.n_resamples, seed=P.seed)
both = detect.compare_auroc(unmatched_table, table)
print(both.round(2).to_string())

# %% [markdown]
# ## Length-matched: AUROC and TPR at 1% and 5% FPR, with 95% bootstrap CIs

# %%
for (name, model), g in table.groupby(["dataset", "model"], sort=False):
    print(f"\n{name}, scorer {model} ({g['n_human'].iloc[0]} human, {g['n_machine'].iloc[0]} machine texts, "
          "length-matched)")
    for r in g.itertuples():
        print(f"  {r.detector:<15} AUROC {format_interval(r.auroc, r.auroc_low, r.auroc_high)}   "
              f"TPR@1% {format_interval(r.tpr_at_1fpr, r.tpr_at_1fpr_low, r.tpr_at_1fpr_high)}   "
              f"TPR@5% {format_interval(r.tpr_at_5fpr, r.tpr_at_5fpr_low, r.tpr_at_5fpr_high)}")
for r in table[table["detector"].isin(["fast_detectgpt", "zlib_ratio", "zlib_bpb"])].itertuples():
    figures.claim(f"{r.dataset}/{r.model}: length-matched AUROC of {r.detector}", r.auroc)

# %%
fprs = tuple(sorted({0.01, P.alpha}))
for model in P.models:
    fig = detection_plots.plot_roc(matched, shown, model, P.datasets)
    numbers = {f"{r.dataset}:{r.detector}": round(float(r.auroc), 2)
               for r in table[table["model"] == model].itertuples()}
    save_figure(fig, f"app_detection_roc_{detect.safe_name(model)}",
                f"ROC curves of zero-shot detectors scored by {model} on length-matched pairs (both texts of a pair "
                f"cut to the same number of scored tokens; first {P.n_texts or 'all'} pairs per dataset, at most "
                f"{P.max_tokens} tokens after the shared prefix). Legend: AUROC.", numbers=numbers)
    plt.show()

# %% [markdown]
# ## Calibrated decisions, leave-one-source-out
#
# Thresholds per length bin at target FPR 1% and `alpha`, from the calibration half of the human texts
# of the sets of the other generators; applied at each text's matched length to every text of the set.
# The FPR is measured (Clopper–Pearson 95%): where it misses the target, the human texts of the other
# sets differ from this set's (another domain), which is what a user with text of another kind meets.

# %%
rows = []
for model in P.models:
    _, r = calibration.benchmark_calibration(*scored[model], P.n_texts, P.max_tokens, P.min_k, 1 - P.calib_frac,
                                             P.seed, resolved_dtype(P.device, P.dtype))
    rows.append(r.assign(model=model))
rows = pd.concat(rows, ignore_index=True)
loso = calibration_checks.leave_one_source_out(rows, matched, length_bins.length_edges(P.max_tokens), shown, fprs)
for (name, model), g in loso.groupby(["dataset", "model"], sort=False):
    print(f"\n{name}, scorer {model}: thresholds from {g['calibrated_on'].iloc[0] or 'nothing'}")
    for r in g.itertuples():
        print(f"  {r.detector:<15} target {r.fpr_target:<5g} FPR {format_interval(r.fpr, r.fpr_low, r.fpr_high)} "
              f"(n={r.n_human})   TPR {format_interval(r.tpr, r.tpr_low, r.tpr_high)} (n={r.n_machine})")

# %% [markdown]
# ## One text of each kind, token by token
#
# Each token coloured by its standardised surprisal `(s - H)/sqrt(V)` under the first scorer (blue:
# more predictable than the model's own average token, red: less); hover for the numbers. Machine
# text is visibly bluer. The HTML is also saved under `outputs/<profile>/figures/`.

# %%
model0 = P.models[0]
s0, tables0, _ = scored[model0]
first = s0[(s0["dataset"] == P.datasets[0]) & (s0["pair"] == s0["pair"].min())]
texts0 = corpora.load_benchmark(P.datasets[0], 1)
tok0 = load_tokenizer(model0)
parts = []
for (idx, row), (_, text) in zip(first.iterrows(), texts0.iterrows()):
    t = tables0[idx].assign(token_text=[tok0.decode([i]) for i in tables0[idx]["token_id"]])
    parts.append(token_view(t, title=f"{P.datasets[0]} pair {row['pair']}, {row['label']} (z = {row['z']:+.2f}, "
                            f"scorer {model0})", prompt=text["prompt"]))
html = "<br>".join(parts)
path = save_token_view(html, f"app_detection_tokenview_{P.datasets[0]}")
display(HTML(html))
print("z human vs machine:", {r["label"]: round(float(r["z"]), 1) for _, r in first.iterrows()})
