"""Stand-ins of the paper's models: tiny random-weight models with their architectures and vocabularies.

The ``paper`` profile names Llama 3.1 8B and 70B (and 8B Instruct, the detectors' reference) and Gemma 3
1B and 12B. Before anyone pays for GPUs, ``params/paper-smoke`` runs every paper notebook on these
stand-ins through the same code paths (the model map points the hub ids at them: ``model_map``).

- **Llama 3.1** (``llama-3.1-8b``, ``llama-3.1-8b-instruct``, ``llama-3.1-70b``): Llama 3.1's configuration:
  grouped-query attention at the real models' ratios (4 query heads per KV head for the 8B, 8 for the 70B),
  RoPE theta 500,000 with the ``llama3`` scaling (factor 8, low/high frequency factors 1 and 4, original
  context 8,192), a 131,072-token context, untied embeddings, SiLU MLPs 3.5x wide. Llama 3.1's tokenizer
  (128,256 tokens) is not available offline, so the three share **SmolLM2's** tokenizer (the embedded
  ``smollm2-135m``, 49,152 tokens, the vocabulary size of their config), made to add a BOS as Llama 3.1's
  does (``<|endoftext|>``, which is also the end of text).
- **Gemma 3** (``gemma-3-1b``, ``gemma-3-12b``): Gemma 3's configuration: five sliding-window layers to one
  global layer, local RoPE theta 10,000 and global 1,000,000 (with the 12B's linear scaling, factor 8),
  ``query_pre_attn_scalar``, GQA (1 KV head for the 1B, 2 query heads per KV head for the 12B), tied
  embeddings; the sliding windows are scaled down with the model (32 and 64 tokens, so that the smoke
  lengths cross them). They share the **Gemma tokenizer** of the embedded ``gemma-3-270m`` (262,144 tokens,
  Gemma 3's own).

A few layers, width 64-128: each runs fast on 2 CPU cores. Weights are drawn from numpy's PCG64 with a fixed
seed per stand-in (never from torch's generator, whose vectorised paths may differ between CPUs), so a
stand-in's weights are the same bytes on every machine (``STANDIN_WEIGHTS_SHA256``, checked by the tests).
Written on first use into ``<AEP_CACHE_DIR>/standins/<name>-v<version>/`` (atomically, under a lock), like the
embedded models' cache; nothing is downloaded and nothing large is committed.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from .embedded import file_sha256
from .embedded_files import ModelLoadError

STANDIN_VERSION = 1  # bump when a change alters what a stand-in holds
MARKER = "STANDIN.json"

LLAMA31_ROPE = {"rope_type": "llama3", "rope_theta": 500_000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


@dataclass(frozen=True)
class Standin:
    """One stand-in: the paper model it stands for, its family, tokenizer source, shape and seed."""

    name: str
    stands_for: str
    family: str  # "llama" | "gemma"
    tokenizer_from: str  # an embedded model (engine.embedded)
    shape: dict = field(default_factory=dict)  # hidden_size, num_hidden_layers, heads, ...
    seed: int = 0

    @property
    def label(self) -> str:
        return standin_label(self.name)


STANDINS: dict[str, Standin] = {s.name: s for s in [
    Standin("llama-3.1-8b", "meta-llama/Llama-3.1-8B", "llama", "smollm2-135m",
            {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 1, "intermediate_size": 224}, seed=8),
    Standin("llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", "llama", "smollm2-135m",
            {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 1, "intermediate_size": 224}, seed=88),
    Standin("llama-3.1-70b", "meta-llama/Llama-3.1-70B", "llama", "smollm2-135m",
            {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 8,
             "num_key_value_heads": 1, "intermediate_size": 448}, seed=70),
    Standin("gemma-3-1b", "google/gemma-3-1b-pt", "gemma", "gemma-3-270m",
            {"hidden_size": 64, "num_hidden_layers": 6, "num_attention_heads": 4,
             "num_key_value_heads": 1, "intermediate_size": 384, "sliding_window": 32}, seed=1),
    Standin("gemma-3-12b", "google/gemma-3-12b-pt", "gemma", "gemma-3-270m",
            {"hidden_size": 96, "num_hidden_layers": 12, "num_attention_heads": 6,
             "num_key_value_heads": 3, "intermediate_size": 384, "sliding_window": 64, "rope_factor": 8.0}, seed=12),
]}

# The paper's hub ids -> their stand-ins (params/paper-smoke's model map says the same).
PAPER_STANDINS = {s.stands_for: s.name for s in STANDINS.values()}

# sha256 of each stand-in's model.safetensors: the same bytes on every machine (tests/engine/test_standins.py).
STANDIN_WEIGHTS_SHA256 = {
    "llama-3.1-8b": "26fb5ffe52995739a006f8aa6435d3d9f74373cb7eb5945dd28e3da1d0094f57",
    "llama-3.1-8b-instruct": "da5ca120975243f739c6eb9e1c0305805b608cb842b7c9d6e998dd71c52ab650",
    "llama-3.1-70b": "51aaeddff222dcbb79f315ec155dc53994ac6850a3a4434b0923f5862c73ba52",
    "gemma-3-1b": "30322e4d23402aee233458ca67d380c679cb41fd52b65bcf73f529b6b518cffd",
    "gemma-3-12b": "c88fd71bee4611b04b11e6dd1781e9028f02a6ad8215e0afcf03bd4b88452bb8",
}


def standin_label(name: str) -> str:
    """``standin:<name>/v<version>``: what a run of a model mapped to this stand-in records as resolved."""
    return f"standin:{name}/v{STANDIN_VERSION}"


def standins_root() -> Path:
    return paths.cache_dir() / "standins"


def standin_dir(name: str) -> Path:
    return standins_root() / f"{name}-v{STANDIN_VERSION}"


def standin_config(spec: Standin, vocab_size: int):
    """The transformers config of a stand-in (its tokenizer's ``vocab_size``)."""
    head_dim = 16
    shape = dict(spec.shape)
    if spec.family == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=vocab_size, head_dim=head_dim, hidden_act="silu", rms_norm_eps=1e-5,
                           max_position_embeddings=131_072, rope_parameters=dict(LLAMA31_ROPE),
                           bos_token_id=0, eos_token_id=0, tie_word_embeddings=False, **shape)
    from transformers import Gemma3TextConfig

    window, factor = shape.pop("sliding_window"), shape.pop("rope_factor", None)
    full = {"rope_type": "default", "rope_theta": 1_000_000.0}
    if factor:
        full = {"rope_type": "linear", "rope_theta": 1_000_000.0, "factor": factor}
    layers = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(shape["num_hidden_layers"])]
    config = Gemma3TextConfig(vocab_size=vocab_size, head_dim=head_dim, query_pre_attn_scalar=head_dim,
                              sliding_window=window, layer_types=layers, max_position_embeddings=131_072,
                              rope_parameters={"full_attention": full,
                                               "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}},
                              bos_token_id=2, eos_token_id=1, pad_token_id=0, tie_word_embeddings=True, **shape)
    config.architectures = ["Gemma3ForCausalLM"]
    return config


def seeded_weights(model, seed: int) -> None:
    """Every matrix of ``model`` drawn from numpy's PCG64 (``seed``, then the parameter's index in name
    order): normal with standard deviation ``1/sqrt(width)``, and the output layer (the tied embedding for
    Gemma) with ``3/sqrt(width)``, so that its logits have a standard deviation near 3. Vectors (norms) keep
    their constant initial values, except Gemma's post-attention and post-MLP norms, set to scale 4 (their
    weight is added to 1): with them at 1 the tied embedding dominates the residual stream and a random
    Gemma repeats its input token (measured: 17-19 of 24 tokens repeated, entropy 3.5-4.5 bits; 0-1 and 11.4
    bits at scale 4)."""
    import numpy as np
    import torch

    params = dict(sorted(model.named_parameters()))
    width = model.config.hidden_size
    tied = model.config.tie_word_embeddings
    with torch.no_grad():
        for i, (name, param) in enumerate(params.items()):
            if param.dim() < 2:
                if name.endswith(("post_attention_layernorm.weight", "post_feedforward_layernorm.weight")) and tied:
                    param.fill_(3.0)
                continue
            output = "lm_head" in name or (name.endswith("embed_tokens.weight") and tied)
            std = (3.0 if output else 1.0) / width**0.5
            rng = np.random.Generator(np.random.PCG64([seed, i]))
            values = rng.standard_normal(tuple(param.shape), dtype=np.float32) * np.float32(std)
            param.copy_(torch.from_numpy(values))


def write_tokenizer(spec: Standin, folder: Path) -> int:
    """The stand-in's tokenizer files in ``folder`` (from the embedded model's cache entry when it is sound,
    else from its GGUF: nothing de-quantized); the Llama stand-ins' adds a BOS. Returns the vocabulary size."""
    from .embedded import (
        cache_problem,
        compact_tokenizer_merges,
        embedded_tokenizer,
        model_cache_dir,
    )

    source = model_cache_dir(spec.tokenizer_from)
    if cache_problem(source) is None:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(source / name, folder / name)
    else:
        embedded_tokenizer(spec.tokenizer_from).save_pretrained(folder)
        compact_tokenizer_merges(folder / "tokenizer.json")
    if spec.family == "llama":
        bos_first(folder)
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size(with_added_tokens=True)


def bos_first(folder: Path, bos: str = "<|endoftext|>") -> None:
    """Make the tokenizer in ``folder`` put ``bos`` before every text (as Llama 3.1's puts
    ``<|begin_of_text|>``) and name it the BOS and the end of text."""
    path = folder / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    ids = [t["id"] for t in data["added_tokens"] if t["content"] == bos]
    special = {"SpecialToken": {"id": bos, "type_id": 0}}
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [special, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [special, {"Sequence": {"id": "A", "type_id": 0}}, special, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": ids, "tokens": [bos]}},
    }
    path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    config = {"backend": "tokenizers", "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos,
              "eos_token": bos, "unk_token": bos, "model_max_length": 131_072}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def write_standin(spec: Standin, folder: Path) -> None:
    """Write stand-in ``spec`` into ``folder``: config, tokenizer, seeded safetensors weights and the marker."""
    import torch
    from transformers import AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(spec, folder)
    config = standin_config(spec, vocab)
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    seeded_weights(model, spec.seed)
    model.save_pretrained(folder, safe_serialization=True)
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    marker = {"standin": spec.name, "version": STANDIN_VERSION, "stands_for": spec.stands_for,
              "tokenizer_from": spec.tokenizer_from, "seed": spec.seed,
              "files": {f: {"size": (folder / f).stat().st_size, "sha256": file_sha256(folder / f)} for f in files}}
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def standin_problem(folder: Path) -> str | None:
    """Why a stand-in folder cannot be used (no marker, a file missing or of another size), or None."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "not written yet" if not folder.exists() else f"{MARKER} missing or unreadable"
    for name, info in marker.get("files", {}).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != info.get("size"):
            return f"{name} missing or of another size than when written"
    return None


def standin_folder(name: str) -> Path:
    """The folder of stand-in ``name``, written on first use (under a lock: processes that find it missing at
    once write it once) and rewritten when damaged."""
    from filelock import FileLock

    if name not in STANDINS:
        raise ModelLoadError(f"unknown stand-in {name!r}; known: {', '.join(STANDINS)}")
    folder = standin_dir(name)
    if standin_problem(folder) is None:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(folder.parent / f".{name}.lock"):
        if standin_problem(folder) is None:
            return folder
        tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            write_standin(STANDINS[name], tmp)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return folder


def standins_table() -> list[dict]:
    """One row per stand-in: name, the model it stands for, tokenizer, shape, written or not (``aep standins``)."""
    rows = []
    for spec in STANDINS.values():
        folder = standin_dir(spec.name)
        rows.append({"name": spec.name, "stands_for": spec.stands_for, "tokenizer_from": spec.tokenizer_from,
                     "layers": spec.shape["num_hidden_layers"], "width": spec.shape["hidden_size"],
                     "written": standin_problem(folder) is None, "folder": str(folder)})
    return rows
