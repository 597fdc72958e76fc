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
# # Sampling sensitivity: what decoding settings do to typicality, and whether they hide the author
#
# One factor at a time around temperature 1 / no truncation: temperature, top-p and top-k. For each
# model and setting, generations are stored with their per-token statistics; per text:
#
# - the final `z` under the sampling distribution `q` (the AEP says `~ N(0, 1)` at every setting) and
#   under the raw `p` (truncated or cooled sampling makes the text over-typical for `p`);
# - the cross-model view: `z` of the text under the *other* model's raw `p`, and the bits-per-byte gap
#   (other − own) on the same characters (the two embedded models share no vocabulary, so there is no
#   token-level `h^(A,B)`);
# - attribution among the raw models (`aep_lib.attribution`, both rules): can a decoding setting hide
#   which model wrote the text?
#
# Heatmaps show the mean per (model, setting) with a 95% bootstrap CI over texts; each setting is
# tested against temperature 1 (Welch and Mann-Whitney, Holm-corrected).

# %%
import warnings

warnings.filterwarnings("ignore")  # before the imports: tqdm warns about ipywidgets on import

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import transformers

import aep_lib.params
from aep_lib import attribution, cross, inference
from aep_lib.paths import output_dir, store_dir
from aep_lib.pipeline import save_figure
from aep_lib.store import RunStore

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
pd.set_option("display.width", 200)

# %% tags=["parameters"]
profile = "cpu"  # params profile this execution belongs to (cpu or paper)
models = "smollm2-135m"  # comma-separated generating models
scorers = "smollm2-135m,gemma-3-270m"  # comma-separated raw models that score every text (attribution candidates)
settings = "t0.7,t1,t1.3,p0.9,k50"  # comma-separated warps, one factor at a time: t<temperature>, p<top_p>, k<top_k>
prompts = "p01"  # comma-separated prompt ids (params/prompts.yaml)
n_seeds = 2  # generations per prompt and setting (seeds 0..n_seeds-1)
max_new_tokens = 64  # tokens per generation
batch_size = 8  # sequences generated together
device = "auto"  # auto (CUDA if present), cpu or cuda
dtype = "auto"  # auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16

# %%
P = aep_lib.params.notebook_params("app_sampling_sensitivity", globals())
store = RunStore(store_dir(P.profile))
sources = {(m, s): cross.Variant.parse(f"{m}@{s}") for m in P.models for s in P.settings}
runs = cross.ensure_sources(store, list(dict.fromkeys(sources.values())), P.prompts, list(range(P.n_seeds)),
                            P.max_new_tokens, batch_size=P.batch_size, device=P.device, dtype=P.dtype)
label_to_setting = {v.label: s for (m, s), v in sources.items()}
runs = runs[runs["status"] == "ok"].assign(setting=lambda d: d["variant"].map(label_to_setting))
candidates = cross.parse_variants(P.scorers, on_eos="continue")  # the raw p of each scorer
cache = output_dir(P.profile) / "cache" / "attribution" / f"sweep_n{P.max_new_tokens}"
table = attribution.attribution_table(store, runs, candidates, [P.max_new_tokens], pool=cross.ModelPool(P.device, P.dtype),
                                      cache=cache)
print(f"{len(runs)} generations: {len(P.models)} models x {len(P.settings)} settings x {len(P.prompts)} prompts "
      f"x {P.n_seeds} seeds, {P.max_new_tokens} tokens; scored by {len(candidates)} raw models")

# %%
per_text = runs[["run_id", "model", "setting", "z_samp", "z_raw"]].rename(columns={"z_samp": "z_q", "z_raw": "z_p"})
own = table[table["candidate_model"] == table["source_model"]].set_index("run_id")
other = table[table["candidate_model"] != table["source_model"]].groupby("run_id")
per_text["z_other"] = per_text["run_id"].map(other["z"].mean())
per_text["bpb_gap"] = per_text["run_id"].map(other["bpb"].mean() - own["bpb"])
for method in attribution.METHODS:
    d = attribution.decide(table, method).set_index("run_id")
    per_text[f"attributed_{method}"] = per_text["run_id"].map(d["correct_model"]).astype(float)
metrics = {"z_q": "z under q", "z_p": "z under p", "z_other": "z under the other model",
           "bpb_gap": "bits/byte, other - own", "attributed_min_abs_z": "attribution right (min |z|)",
           "attributed_max_likelihood": "attribution right (max likelihood)"}
cells = []
for (model, setting), g in per_text.groupby(["model", "setting"], sort=False):
    for key in metrics:
        stat = inference.share if key.startswith("attributed") else np.mean
        ci = inference.bootstrap_ci(g[key], statistic=stat, n_resamples=1000)
        cells.append({"model": model, "setting": setting, "metric": key, "mean": ci.estimate, "low": ci.low,
                      "high": ci.high, "n": ci.n})
cells = pd.DataFrame(cells)
for r in cells.itertuples():
    print(f"{r.model:<14} {r.setting:<6} {metrics[r.metric]:<36} {r.mean:+.2f} [{r.low:+.2f}, {r.high:+.2f}] (n={r.n})")
tested = inference.add_pvalues(per_text, "z_q", None, suffix="_q")
tested = inference.add_pvalues(tested, "z_p", None, suffix="_p")
print("\nshare of texts whose z-test rejects the AEP at 5% (two-sided), under q and under p:")
for (model, setting), g in tested.groupby(["model", "setting"], sort=False):
    print(f"  {model:<14} {setting:<6} q {g['reject_q'].mean():.2f}   p {g['reject_p'].mean():.2f}   (n={len(g)})")

# %% [markdown]
# ## Heatmaps (mean, 95% CI in brackets)

# %%
order = [s for s in P.settings]
fig, axes = plt.subplots(len(metrics), 1, figsize=(1.6 * len(order) + 3, 1.0 * len(P.models) * len(metrics) + 2.5),
                         squeeze=False)
for ax, key in zip(axes[:, 0], metrics):
    sub = cells[cells["metric"] == key]
    grid = sub.pivot(index="model", columns="setting", values="mean").reindex(index=P.models, columns=order)
    lo = sub.pivot(index="model", columns="setting", values="low").reindex(index=P.models, columns=order)
    hi = sub.pivot(index="model", columns="setting", values="high").reindex(index=P.models, columns=order)
    share = key.startswith("attributed")
    vmax = 1.0 if share else max(2.0, float(np.nanmax(np.abs(grid.to_numpy()))))
    ax.imshow(grid.to_numpy(dtype=float), cmap="viridis" if share else "RdBu_r", vmin=0 if share else -vmax, vmax=vmax,
              aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid.iat[i, j]:+.2f}\n[{lo.iat[i, j]:+.1f}, {hi.iat[i, j]:+.1f}]", ha="center",
                    va="center", fontsize=7)
    ax.set_xticks(range(len(order)), order)
    ax.set_yticks(range(len(P.models)), P.models, fontsize=8)
    ax.set_title(metrics[key], fontsize=9)
fig.tight_layout()
numbers = {f"{r.model}:{r.setting}:{r.metric}": round(float(r.mean), 2) for r in cells.itertuples()
           if r.metric in ("z_q", "z_p", "attributed_min_abs_z")}
save_figure(fig, "app_sampling_sensitivity", "Per model and decoding setting (one factor at a time): final z under q and "
            "under p, z under the other model, the bits-per-byte gap, and attribution accuracy among the raw models "
            "(means with 95% bootstrap CIs).", numbers=numbers, run_ids=runs["run_id"].tolist())
plt.show()

# %% [markdown]
# ## Which shifts are statistically robust?
#
# Each setting against temperature 1 (`t1`) of the same model, for `z` under `q` (the AEP predicts no
# shift) and under `p` (predicted: over-typical for cooled or truncated sampling). Holm-adjusted
# p-values of both tests; "robust" = both adjusted p-values below 0.05.

# %%
tests = []
for model, g in per_text.groupby("model", sort=False):
    base = g[g["setting"] == "t1"]
    for setting in [s for s in order if s != "t1"]:
        sel = g[g["setting"] == setting]
        for key in ("z_q", "z_p"):
            t = inference.compare_groups(sel[key], base[key])
            tests.append({"model": model, "setting": setting, "metric": key, "diff": t["diff"], "d": t["cohens_d"],
                          "r_rb": t["r_rb"], "p_welch": t["p_welch"], "p_mw": t["p_mannwhitney"]})
tests = pd.DataFrame(tests)
if len(tests):
    tests["p_welch_holm"] = inference.holm(tests["p_welch"])
    tests["p_mw_holm"] = inference.holm(tests["p_mw"])
    tests["robust"] = (tests["p_welch_holm"] < 0.05) & (tests["p_mw_holm"] < 0.05)
    for r in tests.itertuples():
        print(f"{r.model:<14} {r.setting:<6} {r.metric}: shift {r.diff:+.2f}, Cohen's d {r.d:+.1f}, "
              f"rank-biserial {r.r_rb:+.2f}, Holm p {r.p_welch_holm:.2g} / {r.p_mw_holm:.2g}, robust {r.robust}")
else:
    print("no t1 baseline among the settings: nothing to test against")
