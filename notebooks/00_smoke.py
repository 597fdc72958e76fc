# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 smoke: the embedded models load and generate
#
# Loads each model, prints its vocabulary size and one greedy continuation of a prompt. A check
# that the environment works (packages, model cache, tokenizers, `generate`), not a result.

# %%
from aep_lib.report import figures

figures.setup_notebook(style=None)  # before the other imports: some warn as they load

import torch

import aep_lib.params
from aep_lib import corpora
from aep_lib.engine.embedded import EMBEDDED_MODELS
from aep_lib.engine.models import load_model

# %% tags=["parameters"]
profile = "cpu"  # params profile this execution belongs to (cpu or paper)
models = "smollm2-135m,gemma-3-270m"  # comma-separated model names: embedded short names, hub ids or folders
prompt = "p01"  # prompt id from params/prompts.yaml
max_new_tokens = 12  # length of each greedy continuation, in tokens

# %%
P = aep_lib.params.notebook_params("00_smoke", globals())
text = corpora.prompt_text(P.prompt)
print(f"prompt {P.prompt}: {text!r}")

# %% [markdown]
# One greedy continuation per model, with plain `model.generate` (the generation engine will
# replace this). The claim: each model has its documented vocabulary and continues the prompt.

# %%
for name in P.models:
    model, tok = load_model(name)
    inputs = tok(text, return_tensors="pt").to(model.device)
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=P.max_new_tokens,
                             pad_token_id=tok.pad_token_id or tok.eos_token_id)
    new_ids = out[0, inputs["input_ids"].shape[1]:]
    vocab = model.config.vocab_size
    print(f"{name}: {tok.decode(new_ids, skip_special_tokens=True)!r}")
    assert len(new_ids) > 0 and int(new_ids.max()) < vocab, f"{name}: no valid continuation"
    if name in EMBEDDED_MODELS:
        assert vocab == EMBEDDED_MODELS[name].vocab_size, f"{name}: vocab {vocab}"
    print(f"{name}: vocab {vocab}, greedy continuation ok")
    del model
