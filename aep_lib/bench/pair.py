"""``pair``: the joint pass of two models on one vocabulary (SmolLM2 and a perturbed copy) against one
model's scoring pass (goal ≤ 2.2×)."""

from __future__ import annotations

import gc
import time

from ..engine.models import cached_model
from .common import Result, median, say


def perturbed_copy(model, scale: float = 0.05, seed: int = 0):
    """A second model on the same vocabulary: a deep copy with Gaussian noise of ``scale`` × each matrix's std."""
    import copy

    import torch

    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            if p.dim() >= 2:
                p.add_(torch.randn(p.shape, generator=gen) * (scale * p.std()))
    other.aep_identity = dict(getattr(model, "aep_identity", {}), model="perturbed copy")
    return other


def bench_pair(repeats: int, quick: bool, model_name: str = "smollm2-135m") -> Result:
    import torch

    from ..engine.score import score_ids

    n = 128 if quick else 1024
    model, _ = cached_model(model_name, "cpu", "float32")
    other = perturbed_copy(model)
    ids = torch.randint(0, model.config.vocab_size, (n,), generator=torch.Generator().manual_seed(1)).tolist()
    score_ids(model, ids[:64], 1, reference=other)  # warm-up
    single, pair = [], []
    for r in range(repeats):
        t = time.perf_counter()
        score_ids(model, ids, 1)
        single.append(time.perf_counter() - t)
        t = time.perf_counter()
        score_ids(model, ids, 1, reference=other)
        pair.append(time.perf_counter() - t)
        say(f"  pair repeat {r + 1}/{repeats}: one model {single[-1]:.2f} s, pair {pair[-1]:.2f} s")
    s, p = median(single), median(pair)
    del other
    gc.collect()
    return Result(
        "pair", f"s, {model_name} {n} tok: pair vs one", p, s, "s", p / s, "<= 2.2x", p / s <= 2.2,
        details={"one model (s, each repeat)": [round(x, 2) for x in single],
                 "joint pair pass (s, each repeat)": [round(x, 2) for x in pair]},
        notes=["second model: a copy of the first with Gaussian noise (5% of each matrix's std) on every matrix"],
    )
