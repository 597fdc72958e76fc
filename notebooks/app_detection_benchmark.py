# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Detecting machine text: typicality against the classic zero-shot detectors
#
# Human texts (`original`) against machine texts (`sampled`) of the fast-detect-gpt benchmark sets
# (GPT-4 / GPT-3.5 continuations of XSum news, WritingPrompts stories and PubMedQA answers) and the
# Binoculars PubMed file (Falcon-7B). Every text is scored ONCE by each scoring model (its raw `p`,
# only after the prefix the two texts of a pair share, at most `max_tokens` tokens); all detectors
# come from that one per-token table (`aep_lib.detect`). Per detector, dataset and scorer: AUROC and
# TPR at 1% and 5% FPR with 95% bootstrap CIs; then decision thresholds (the CLT level of the
# typicality z, and a threshold calibrated on held-out human text) with the FPR they actually give.
#
# With one scoring model and no reference on its vocabulary, the analytic Fast-DetectGPT criterion
# is its white-box form, exactly `-z`, and Binoculars is `l / h` (DESIGN.md §1, A = B).
# `n_texts = 0` runs the full sets.

# %%
from aep_lib import report

report.setup_notebook(style=None, pandas_width=200, pandas_max_columns=20)  # before the other imports

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import HTML, display

import aep_lib.params
from aep_lib import corpora, detect, plots
from aep_lib.models import load_tokenizer
from aep_lib.paths import output_dir
from aep_lib.report import save_figure
from aep_lib.tokenview import save_token_view, token_view

# %% tags=["parameters"]
profile = "cpu"  # params profile this execution belongs to (cpu or paper)
models = "smollm2-135m"  # comma-separated scoring models (embedded short names, hub ids or folders)
reference = ""  # reference model on the scorers' vocabulary for Fast-DetectGPT/Binoculars ("": the scorer itself)
datasets = "xsum_gpt-4,pubmed_falcon-7b"  # comma-separated benchmark names (aep_lib.detect.BENCHMARKS)
n_texts = 12  # pairs (human + machine) per dataset, the first n; 0 for all
max_tokens = 128  # scored tokens per text at most (after the shared prefix)
min_k = 0.2  # Min-K% and Min-K%++: share of least likely tokens
n_resamples = 1000  # bootstrap resamples for the CIs
alpha = 0.05  # nominal false-positive level of the decision thresholds
calib_frac = 0.5  # share of pairs whose human texts calibrate the thresholds (the rest test them)
seed = 0  # seed of the bootstrap and of the calibration split
device = "auto"  # auto (CUDA if present), cpu or cuda
dtype = "auto"  # auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16

# %%
P = aep_lib.params.notebook_params("app_detection_benchmark", globals())
cache_dir = output_dir(P.profile) / "cache" / "detect"
frames = []
for model in P.models:
    for name in P.datasets:
        texts = corpora.load_benchmark(name, P.n_texts)
        path = detect.cache_path(cache_dir, model, P.reference, name, P.max_tokens)
        frames.append(detect.score_texts(model, texts, reference=P.reference or None, max_tokens=P.max_tokens,
                                         k=P.min_k, cache=path, device=P.device, dtype=P.dtype))
scores = pd.concat(frames, ignore_index=True)
summary = scores.groupby(["dataset", "model", "label"])["n_tokens"].agg(["count", "median"])
print(summary.rename(columns={"count": "texts", "median": "median tokens"}).to_string())

# %% [markdown]
# ## AUROC and TPR at low FPR, with 95% bootstrap CIs
#
# Detectors are oriented in advance (`aep_lib.detect.DETECTORS`: higher = machine after the sign),
# never flipped on the test data: an AUROC below 0.5 means the criterion points the other way here.

# %%
table = detect.evaluate(scores, n_resamples=P.n_resamples, seed=P.seed)
show = table.assign(
    AUROC=[f"{a:.2f} [{lo:.2f}, {hi:.2f}]" for a, lo, hi in zip(table.auroc, table.auroc_low, table.auroc_high)],
    TPR_1pct=[f"{a:.2f} [{lo:.2f}, {hi:.2f}]" for a, lo, hi in
              zip(table.tpr_at_1fpr, table.tpr_at_1fpr_low, table.tpr_at_1fpr_high)],
    TPR_5pct=[f"{a:.2f} [{lo:.2f}, {hi:.2f}]" for a, lo, hi in
              zip(table.tpr_at_5fpr, table.tpr_at_5fpr_low, table.tpr_at_5fpr_high)],
)
for (name, model), g in show.groupby(["dataset", "model"], sort=False):
    print(f"\n{name}, scorer {model} ({g['n_human'].iloc[0]} human, {g['n_machine'].iloc[0]} machine texts)")
    print(g[["detector", "AUROC", "TPR_1pct", "TPR_5pct"]].to_string(index=False))

# %% [markdown]
# The AUROC table as one matrix (rows: detector; columns: dataset × scorer), and the claims.

# %%
matrix = table.pivot_table(index="detector", columns=["dataset", "model"], values="auroc", sort=False)
print(matrix.round(2).to_string())
best = table.loc[table.groupby(["dataset", "model"])["auroc"].idxmax(), ["dataset", "model", "detector", "auroc"]]
print("\nbest detector per dataset and scorer:")
for r in best.itertuples():
    print(f"  {r.dataset:<24} {r.model:<16} {r.detector:<15} AUROC {r.auroc:.2f}")
fdg = table[table["detector"] == "fast_detectgpt"]
print("white-box Fast-DetectGPT (= -z) AUROC above 0.5 with its CI:",
      {f"{r.dataset}/{r.model}": bool(r.auroc_low > 0.5) for r in fdg.itertuples()})

# %%
for model in P.models:
    fig = plots.plot_roc(scores, ["fast_detectgpt", "binoculars", "log_likelihood", "log_rank", "min_k_pp",
                                  "zlib_ratio"], model, P.datasets)
    numbers = {f"{r.dataset}:{r.detector}": round(float(r.auroc), 2)
               for r in table[table["model"] == model].itertuples()
               if r.detector in ("fast_detectgpt", "binoculars", "log_likelihood", "log_rank")}
    save_figure(fig, f"app_detection_roc_{detect.safe_name(model)}",
                f"ROC curves of zero-shot detectors scored by {model} (one scoring pass per text; "
                f"first {P.n_texts or 'all'} pairs per dataset, at most {P.max_tokens} tokens after the shared prefix). "
                "Legend: AUROC.", numbers=numbers)
    plt.show()

# %% [markdown]
# ## Decision thresholds and the FPR they actually give
#
# Pairs are split (seeded) into a calibration half and a test half. `calibrated`: the human
# calibration texts' `1 - alpha` quantile; `clt`: machine iff the text is over-typical at level
# `alpha` (`fast_detectgpt = -z > z_(1-alpha)`), a level that is only guaranteed for text sampled from
# the scorer itself. Test FPR with its Clopper-Pearson 95% interval; with few test texts the interval
# is wide, which is the honest answer.

# %%
thr = detect.threshold_report(scores, alphas=(P.alpha,), calib_frac=P.calib_frac, seed=P.seed)
keep = thr["detector"].isin(["fast_detectgpt", "binoculars", "log_likelihood", "log_rank", "min_k_pp"])
for r in thr[keep].itertuples():
    print(f"{r.dataset:<24} {r.model:<14} {r.detector:<15} {r.rule:<10} nominal {r.alpha:.2f}: test FPR "
          f"{r.fpr_test:.2f} [{r.fpr_low:.2f}, {r.fpr_high:.2f}] (n={r.n_test_human}), TPR {r.tpr_test:.2f}")

# %% [markdown]
# ## One text of each kind, token by token
#
# Each token coloured by its standardised surprisal `(s - H)/sqrt(V)` under the first scorer (blue:
# more predictable than the model's own average token, red: less); hover for the numbers. Machine
# text is visibly bluer. The HTML is also saved under `outputs/<profile>/figures/`.

# %%
model0, name0 = P.models[0], P.datasets[0]
texts0 = corpora.load_benchmark(name0, 1)
sc0, toks0 = detect.score_texts(model0, texts0, reference=P.reference or None, max_tokens=P.max_tokens, k=P.min_k,
                                cache=detect.cache_path(cache_dir, model0, P.reference, name0, P.max_tokens),
                                return_tokens=True, device=P.device, dtype=P.dtype)
tok0 = load_tokenizer(model0)
parts = []
for idx, row in texts0.iterrows():
    t = toks0[idx].assign(token_text=[tok0.decode([i]) for i in toks0[idx]["token_id"]])
    parts.append(token_view(t, title=f"{name0} pair 0, {row['label']} (z = {sc0.loc[idx, 'z']:+.2f}, scorer {model0})",
                            prompt=row["prompt"]))
html = "<br>".join(parts)
path = save_token_view(html, f"app_detection_tokenview_{name0}")
display(HTML(html))
print("z human vs machine:", {r["label"]: round(float(s), 1) for (_, r), s in zip(texts0.iterrows(), sc0["z"])})
