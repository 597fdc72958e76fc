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
# - attribution among the raw models (`aep_lib.analysis.attribution`, both rules): can a decoding setting hide
#   which model wrote the text?
#
# Heatmaps show the mean per (model, setting) with a 95% bootstrap CI over texts; each setting is
# tested against temperature 1 (Welch and Mann-Whitney, Holm-corrected). The tables come from
# `aep_lib.analysis.tables` (`decoding_table`, `group_cis`, `z_test_shares`, `shift_tests`), the heatmaps from
# `aep_lib.report.plots.plot_ci_heatmaps`.

# %%
from aep_lib.report import figures

figures.setup_notebook(style=None, pandas_width=200)  # before the other imports: some warn as they load

import matplotlib.pyplot as plt
import pandas as pd

import aep_lib.params
from aep_lib.analysis import attribution, tables
from aep_lib.core import sampling
from aep_lib.engine.models import ModelPool
from aep_lib.paths import output_dir, store_dir
from aep_lib.report import plots
from aep_lib.report.figures import save_figure
from aep_lib.runs import comparisons
from aep_lib.store.run_store import RunStore

# %% tags=["parameters"]
profile = "cpu"  # params profile this execution belongs to (cpu or paper)
models = "smollm2-135m"  # comma-separated generating models
scorers = "smollm2-135m,gemma-3-270m"  # comma-separated raw models that score every text (attribution candidates)
settings = "t0.7,t1,t1.3,p0.9,k50"  # comma-separated warps, one factor at a time: t<temperature>, p<top_p>, k<top_k>
prompts = "p01"  # comma-separated prompt ids (params/prompts.yaml)
n_seeds = 2  # generations per prompt and setting (seeds 0..n_seeds-1)
max_new_tokens = 64  # tokens per generation
batch_size = 18  # sequences generated together (the settings share batches)
device = "auto"  # auto (CUDA if present), cpu or cuda
dtype = "auto"  # auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16

# %%
P = aep_lib.params.notebook_params("app_sampling_sensitivity", globals())
store = RunStore(store_dir(P.profile))
sources = {(m, s): sampling.Variant.parse(f"{m}@{s}") for m in P.models for s in P.settings}
runs = comparisons.ensure_sources(store, list(dict.fromkeys(sources.values())), P.prompts, list(range(P.n_seeds)),
                                  P.max_new_tokens, batch_size=P.batch_size, device=P.device, dtype=P.dtype)
label_to_setting = {v.label: s for (m, s), v in sources.items()}
runs = runs[runs["status"] == "ok"].assign(setting=lambda d: d["variant"].map(label_to_setting))
candidates = sampling.parse_variants(P.scorers, on_eos="continue")  # the raw p of each scorer
cache = output_dir(P.profile) / "cache" / "attribution" / f"sweep_n{P.max_new_tokens}"
table = attribution.attribution_table(store, runs, candidates, [P.max_new_tokens], pool=ModelPool(P.device, P.dtype),
                                      cache=cache)
print(f"{len(runs)} generations: {len(P.models)} models x {len(P.settings)} settings x {len(P.prompts)} prompts "
      f"x {P.n_seeds} seeds, {P.max_new_tokens} tokens; scored by {len(candidates)} raw models")

# %%
decisions = pd.concat([attribution.decide(table, m) for m in attribution.METHODS], ignore_index=True)
per_text = tables.decoding_table(runs, table, decisions)
metrics = {"z_q": "z under q", "z_p": "z under p", "z_other": "z under the other model",
           "bpb_gap": "bits/byte, other - own", "attributed_min_abs_z": "attribution right (min |z|)",
           "attributed_max_likelihood": "attribution right (max likelihood)"}
shares = [f"attributed_{m}" for m in attribution.METHODS]
cells = tables.group_cis(per_text, ["model", "setting"], metrics, shares=shares, n_resamples=1000)
for r in cells.itertuples():
    print(f"{r.model:<14} {r.setting:<6} {metrics[r.metric]:<36} {r.mean:+.2f} [{r.low:+.2f}, {r.high:+.2f}] (n={r.n})")
rejected = tables.z_test_shares(per_text, ["model", "setting"], {"q": "z_q", "p": "z_p"})
print("\nshare of texts whose z-test rejects the AEP at 5% (two-sided), under q and under p:")
for r in rejected.itertuples():
    print(f"  {r.model:<14} {r.setting:<6} q {r.reject_q:.2f}   p {r.reject_p:.2f}   (n={r.n})")

# %% [markdown]
# ## Heatmaps (mean, 95% CI in brackets)

# %%
order = list(P.settings)
fig = plots.plot_ci_heatmaps(cells, metrics, index=P.models, columns=order, shares=shares)
numbers = {f"{r.model}:{r.setting}:{r.metric}": round(float(r.mean), 2) for r in cells.itertuples()
           if r.metric in ("z_q", "z_p", "attributed_min_abs_z")}
save_figure(fig, "app_sampling_sensitivity", "Per model and decoding setting (one factor at a time): final z "
            "under q and under p, z under the other model, the bits-per-byte gap, and attribution accuracy "
            "among the raw models (means with 95% bootstrap CIs).", numbers=numbers,
            run_ids=runs["run_id"].tolist())
plt.show()

# %% [markdown]
# ## Which shifts are statistically robust?
#
# Each setting against temperature 1 (`t1`) of the same model, for `z` under `q` (the AEP predicts no
# shift) and under `p` (predicted: over-typical for cooled or truncated sampling). Holm-adjusted
# p-values of both tests; "robust" = both adjusted p-values below 0.05.

# %%
tests = tables.shift_tests(per_text, "t1", order, ("z_q", "z_p"))
if len(tests):
    for r in tests.itertuples():
        print(f"{r.model:<14} {r.setting:<6} {r.metric}: shift {r.diff:+.2f}, Cohen's d {r.d:+.1f}, "
              f"rank-biserial {r.r_rb:+.2f}, Holm p {r.p_welch_holm:.2g} / {r.p_mw_holm:.2g}, robust {r.robust}")
else:
    print("no t1 baseline among the settings: nothing to test against")
