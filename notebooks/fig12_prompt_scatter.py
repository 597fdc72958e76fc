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
# # Figs 12–15: per-prompt scatter of final entropy against final log-perplexity
#
# One figure per prompt id (the pipeline runs this notebook once per prompt; the figure number is
# 12 + the prompt's position in `prompts`). One point per run: final entropy `h_n` (x) against
# final log-perplexity `l_n` (y), with `±2σ_n` bars and the diagonal `l = h`; colour = model.
# Circles: untruncated runs (`q = p`); squares: top-p runs under their `q`; crosses: the same
# top-p runs under the raw `p`.
#
# The claim: under `q` the points lie on the diagonal (within ±2σ of it); under the raw `p` of the
# top-p sampler they lie below it (`l < h`: over-typical).

# %%
from aep_lib.report import figures

figures.setup_notebook()  # before the other imports: some warn as they load

import matplotlib.pyplot as plt
import numpy as np

import aep_lib.params
from aep_lib import corpora
from aep_lib.analysis import tables
from aep_lib.paths import store_dir
from aep_lib.report import plots
from aep_lib.report.figures import save_figure
from aep_lib.store.run_store import RunStore

# %% tags=["parameters"]
profile = "cpu"  # params profile this execution belongs to (cpu or paper)
models = "smollm2-135m,gemma-3-270m"  # comma-separated model names: embedded short names, hub ids or folders
prompts = "p01,p02"  # comma-separated prompt ids from params/prompts.yaml
n_seeds = 3  # generations per model and prompt at temperature 1 without truncation
n_seeds_truncated = 1  # generations per model and prompt with top-p truncation
top_p = 0.9  # nucleus mass of the truncated setting
max_new_tokens = 192  # length of every generation, in tokens
batch_size = 24  # sequences generated together (both settings of a model in one batch)
device = "auto"  # torch device: auto, cpu, cuda, cuda:1, ...
dtype = "auto"  # model dtype: auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16
prompt = "p01"  # the prompt id of this figure, one of prompts

# %%
P = aep_lib.params.notebook_params("fig12_prompt_scatter", globals())
store = RunStore(store_dir(P.profile))
runs = tables.ensure_self_grid(store, P)
print(tables.describe_grid(runs))
runs = runs[runs["prompt_id"] == P.prompt]
finals = tables.final_table(store, runs)
under_q = finals[finals["dist"] == "samp"]
under_p = finals[(finals["dist"] == "raw") & (finals["setting"] == tables.TRUNCATED)]
figure_number = 12 + P.prompts.index(P.prompt)
text = corpora.prompt_text(P.prompt)
print(f"Fig {figure_number}: prompt {P.prompt}, {len(runs)} runs")

# %%
colors = plots.model_colors(P.models)
groups = [(tables.MAIN, "samp", "o", "temperature 1"), (tables.TRUNCATED, "samp", "s", f"top-p {P.top_p:g} under q"),
          (tables.TRUNCATED, "raw", "x", f"top-p {P.top_p:g} under p")]
fig, ax = plt.subplots(figsize=(6.2, 5.6))
for model in P.models:
    for setting, dist, marker, label in groups:
        g = finals[(finals["model"] == model) & (finals["setting"] == setting) & (finals["dist"] == dist)]
        plots.plot_final_scatter(ax, g["h"], g["l"], color=colors[model], marker=marker, diagonal=False,
                                 sigma=g["sigma"], label=f"{plots.short_name(model)}, {label} ({len(g)})")
plots.add_diagonal(ax)
ax.set_title(f"Fig {figure_number}: prompt {P.prompt}\n“{text[:48]}{'…' if len(text) > 48 else ''}”")
ax.legend(loc="upper left")
plots.finish(fig)

# %% [markdown]
# The numbers the figure claims, pooled over the models.

# %%
share_q = float(np.mean(np.abs(under_q["z"]) <= 2))
below_p = float(np.mean(under_p["l"] < under_p["h"]))
checks = [
    figures.claim(f"prompt {P.prompt}: share of runs within 2 sigma of the diagonal under q", share_q, at_least=0.75),
    figures.claim(f"prompt {P.prompt}: mean |l - h| under q (bits/token)", np.mean(np.abs(under_q["D"])), at_most=0.3),
    figures.claim(f"prompt {P.prompt}: share of top-p runs below the diagonal under p", below_p, at_least=0.75),
]
print(f"all claims hold: {all(checks)}")

save_figure(fig, f"fig{figure_number}_prompt_scatter_{P.prompt}",
            caption=(f"Prompt {P.prompt} ({text!r}): final entropy h_n against final log-perplexity l_n after "
                     f"{P.max_new_tokens} tokens, one point per run with ±2σ bars, colour = model. Circles and squares: "
                     f"untruncated and top-p {P.top_p:g} runs under their sampling distribution q (on the diagonal); "
                     "crosses: the top-p runs under the raw p (below it)."),
            numbers={"prompt": P.prompt, "runs": len(runs), "share within 2 sigma under q": round(share_q, 2),
                     "share below the diagonal under p (top-p)": round(below_p, 2)},
            run_ids=runs["run_id"].tolist())
