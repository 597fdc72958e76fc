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
# # Calibrating machine-text decisions on human text: thresholds per length bin, with measured error rates
#
# A detector score becomes a decision only with a threshold and the false-positive rate (FPR) that
# threshold carries on *human* text of the kind and length at hand. The CLT level of the typicality
# test (`fast_detectgpt = -z > 1.64` at 5%) is no such threshold: its null is "the text was sampled from
# the scorer's own `p`" (attribution), not "a human wrote it". Here, per scoring model:
#
# 1. the human texts of benchmark sets are split per set into a **calibration** half and a **held-out**
#    half (seeded; no machine text is used, and the held-out half never sets a threshold);
# 2. each text is scored once; its scores at shorter lengths are those of its prefixes (exact for a
#    causal model); per **length bin** every text contributes one prefix of a length drawn in the bin;
# 3. the threshold of a bin at target FPR `f` is the `j`-th largest of its `n` calibration scores,
#    `j = floor(f · (n + 1))` (split-conformal: a new human text like these exceeds it with probability
#    at most `f`); its FPR is *measured* on the held-out texts of that bin (Clopper–Pearson 95%).
#
# Why per length bin, rather than one length-normalised statistic: the figure plots human scores against
# length. The per-token means (log-likelihood, Binoculars, the zlib ratio) drift with length (the first
# tokens have the least context; zlib compresses a longer text better) and their spread shrinks like
# `1/√n`; `z` would grow like `√n` for a fixed per-token offset. No single normalisation removes both
# the drift and the change of spread for every detector, and one threshold for all lengths would have a
# different FPR at each; a threshold per bin, measured per bin, does not need either.
#
# The detectors follow Fast-DetectGPT (Bao et al., arXiv:2310.05130; analytic criterion, white-box
# here: `-z`), Binoculars (Hans et al., arXiv:2401.12070; `l / h` here, averaged over the same scored
# positions: its reference code averages the cross-entropy over one more position, the one predicting
# past the end of the text), Min-K% (Shi et al., arXiv:2310.16789) and Min-K%++ (Zhang et al.,
# arXiv:2404.02936). The calibration files `aep detect` uses by default are built by this notebook with
# the parameters in `data/calibration/MANIFEST.md`; the notebook also shows them.

# %%
from aep_lib.report import figures

figures.setup_notebook(pandas_width=200, pandas_max_columns=20)  # before the other imports

import matplotlib.pyplot as plt

import aep_lib.params
from aep_lib.analysis import calibration, calibration_checks, detect
from aep_lib.core.inference import z_level
from aep_lib.engine.models import resolved_dtype
from aep_lib.paths import output_dir, project_root
from aep_lib.report import detection_plots
from aep_lib.report.figures import save_figure

# %% tags=["parameters"]
profile = "cpu"  # params profile this execution belongs to (cpu or paper)
models = "smollm2-135m"  # comma-separated scoring models to calibrate
reference = ""  # reference model, for the scorers on its vocabulary (others, and "": the scorer itself)
datasets = "xsum_gpt-4,pubmed_falcon-7b"  # comma-separated benchmark sets whose human texts calibrate
n_texts = 10  # pairs per set, the first n (their human texts are used); 0 for all
max_tokens = 64  # scored tokens per text at most; the longest length the calibration covers
min_k = 0.2  # Min-K% and Min-K%++ share of least likely tokens
heldout_frac = 0.5  # share of each set's human texts held out to measure the false-positive rate
fpr = 0.05  # target false-positive rate shown in the tables and the figure
seed = 0  # seed of the held-out split and of the lengths drawn within each bin
shipped_models = "smollm2-135m,gemma-3-270m,qwen2.5-coder-1.5b"  # models whose shipped calibration (data dir) is shown
write_dir = ""  # folder for the calibration files, relative to the project root ("": the outputs folder)
device = "auto"  # auto (CUDA if present), cpu or cuda
dtype = "auto"  # auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16

# %%
P = aep_lib.params.notebook_params("detection_calibration", globals())
cache_dir = output_dir(P.profile) / "cache" / "detect"
folder = project_root() / P.write_dir if P.write_dir else output_dir(P.profile) / "calibration"
built = {}
for model in P.models:
    scores, tables, spans = detect.benchmark_tables(P.datasets, model, P.n_texts, P.max_tokens, P.min_k,
                                                    P.reference or None, cache_dir, P.device, P.dtype,
                                                    labels=("human",))
    cal, rows = calibration.benchmark_calibration(scores, tables, spans, P.n_texts, P.max_tokens, P.min_k,
                                                  P.heldout_frac, P.seed, resolved_dtype(P.device, P.dtype))
    command = (f"papermill notebooks/detection_calibration.ipynb out.ipynb -p models {','.join(P.models)} -p datasets "
               f"{','.join(P.datasets)} -p n_texts {P.n_texts} -p max_tokens {P.max_tokens} -p write_dir {P.write_dir}"
               + (f" -p reference {P.reference}" if P.reference else ""))
    path = calibration.write_shipped(cal, folder, command) if P.write_dir else calibration.save_calibration(
        cal, folder / f"{detect.safe_name(model)}.json")
    built[model] = calibration.load_calibration(path)
    split = rows.drop_duplicates(["dataset", "pair"])["split"].value_counts()
    print(f"{model}: {cal['corpus']['n_texts']} human texts; of those with at least {cal['settings']['length_edges'][0]} "
          f"tokens {split.get('calibration', 0)} calibrate, {split.get('heldout', 0)} are held out; {len(rows)} rows "
          f"in {len(cal['settings']['length_edges']) - 1} length bins up to {P.max_tokens} tokens -> "
          f"{path.relative_to(folder.parent)}")

# %% [markdown]
# ## The calibration just built: thresholds per length bin and the FPR they give on held-out human text
#
# Default detector (`fast_detectgpt`, the white-box analytic Fast-DetectGPT criterion); `threshold` is
# on its machine-oriented scale (higher = more machine-like). The CLT level applied to the same held-out
# texts shows what a level for "sampled from the model" gives on human text.

# %%
clt = z_level(P.fpr)
for model, cal in built.items():
    rows, edges = calibration.rows_frame(cal), cal["settings"]["length_edges"]
    table = calibration.bin_thresholds(rows, edges, calibration.DEFAULT_DETECTOR, P.fpr)
    at_clt = calibration.bin_thresholds(rows, edges, calibration.DEFAULT_DETECTOR, P.fpr, fixed=clt)
    print(f"{model}, target FPR {P.fpr:g}:")
    for r, c in zip(table.itertuples(), at_clt.itertuples()):
        print(f"  {r.low:>4}-{r.high:<4} tokens  n {r.n_calibration:>4}  threshold {figures.signed(r.threshold, 2):>6}  "
              f"held-out FPR {figures.format_interval(r.fpr_heldout, r.fpr_low, r.fpr_high)} of {r.n_heldout:>4}  |  "
              f"CLT level {clt:.2f}: FPR {figures.fixed(c.fpr_heldout)}")

# %% [markdown]
# ## The shipped calibrations (`aep detect`'s default)
#
# Per model: the corpus and split, then per length bin the thresholds at 1% and 5% FPR with the FPR
# measured on the held-out half, and per benchmark set the held-out FPR at the target (each held-out
# text once, at about its whole length).

# %%
shipped = {m: calibration.load_calibration(calibration.shipped_calibration(m)) for m in P.shipped_models}
for model, cal in shipped.items():
    rows, edges = calibration.rows_frame(cal), cal["settings"]["length_edges"]
    s = cal["settings"]
    ref = "" if cal["reference"] == cal["model"] else f", reference {cal['reference']['name']}"
    print(f"\n{model}{ref}: {cal['corpus']['name']}; {cal['corpus']['n_texts']} texts; max_tokens {s['max_tokens']}, "
          f"Min-K% {s['min_k']}, {s['dtype']}\n  split: {cal['corpus']['split']}")
    for f in (0.01, 0.05):
        t = calibration.bin_thresholds(rows, edges, calibration.DEFAULT_DETECTOR, f)
        print(f"  {calibration.DEFAULT_DETECTOR} at target FPR {f:g}:")
        for r in t.itertuples():
            print(f"    {r.low:>4}-{r.high:<4} tokens  n {r.n_calibration:>4}  threshold {figures.signed(r.threshold, 2):>6}"
                  f"  held-out FPR {figures.format_interval(r.fpr_heldout, r.fpr_low, r.fpr_high, 3)} of {r.n_heldout}")
    by_set = calibration_checks.heldout_by_dataset(rows, edges, calibration.DEFAULT_DETECTOR, P.fpr)
    for r in by_set.itertuples():
        print(f"  held-out {r.dataset:<24} FPR {figures.format_interval(r.fpr_heldout, r.fpr_low, r.fpr_high, 3)} "
              f"({r.false_positives} of {r.n_heldout}) at target {P.fpr:g}")

# %% [markdown]
# ## Human scores against length
#
# Calibration rows of the shipped calibrations (grey dots), the bin medians with their 5–95% band, the
# threshold at the target FPR per bin (red steps) and, for `fast_detectgpt`, the CLT level (dashed).

# %%
shown = ["fast_detectgpt", "log_likelihood", "binoculars", "zlib_ratio"]
source = shipped or built
all_rows = {m: calibration.rows_frame(c) for m, c in source.items()}
profiles = {m: calibration_checks.length_profile(all_rows[m], c["settings"]["length_edges"], shown, P.fpr)
            for m, c in source.items()}
fig = detection_plots.plot_scores_by_length(all_rows, profiles, shown, P.fpr, clt_level=clt)
numbers = {}
for model, prof in profiles.items():
    for d in shown:
        p = prof[prof["detector"] == d].sort_values("bin")
        first, last = p.iloc[0], p.iloc[-1]
        print(f"{model:<14} {d:<15} median {figures.signed(first['median'], 3)} at {first['n_tokens']:.0f} tokens -> "
              f"{figures.signed(last['median'], 3)} at {last['n_tokens']:.0f}; 5-95% width "
              f"{first['q95'] - first['q05']:.3f} -> {last['q95'] - last['q05']:.3f}")
        numbers[f"{model}:{d}:median_shortest"] = round(float(first["median"]), 3)
        numbers[f"{model}:{d}:median_longest"] = round(float(last["median"]), 3)
for model, cal in source.items():
    rows, edges = all_rows[model], cal["settings"]["length_edges"]
    t = calibration.bin_thresholds(rows, edges, calibration.DEFAULT_DETECTOR, P.fpr)
    held = t[t["n_heldout"] > 0]
    pooled = held["false_positives"].sum() / held["n_heldout"].sum()
    figures.claim(f"{model}: held-out FPR of {calibration.DEFAULT_DETECTOR} at target {P.fpr:g}, pooled over bins",
                 pooled, digits=3, **({"at_least": P.fpr / 2, "at_most": 2 * P.fpr} if model in shipped else {}))
    at_clt = calibration.bin_thresholds(rows, edges, calibration.DEFAULT_DETECTOR, P.fpr, fixed=clt)
    figures.claim(f"{model}: held-out FPR of the CLT level {clt:.2f} on human text (an observation)",
                 at_clt["false_positives"].sum() / max(1, at_clt["n_heldout"].sum()), digits=3)
save_figure(fig, "detection_calibration_length",
            "Human texts' machine-oriented detector scores against length (scored tokens) under each model, with "
            f"the per-bin threshold at {P.fpr:g} FPR and the CLT level of the typicality test.", numbers=numbers)
plt.show()
