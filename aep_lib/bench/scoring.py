"""``scoring``: a 4,096-token text under Gemma: tokens/s as a fraction of the compute roofline (float32
matmul FLOP/s measured in the same process / FLOP per token) and peak memory. Goals ≥ 50% and
≤ model + 1 GB.

The measurement itself runs in a child process (``scoring_child``, launched through ``run_child``).
"""

from __future__ import annotations

import gc
import time

from ..models import cache_kwargs, cached_model, new_cache
from .common import (
    GIB,
    PeakRSS,
    Result,
    flops_per_token,
    matmul_flops,
    median,
    param_bytes,
    rss,
    run_child,
)


def scoring_child(model_name: str, n: int, repeats: int) -> dict:
    """In the child process: score ``n`` random tokens with ``model_name`` ``repeats`` times, with the
    matmul rate beside each repeat, the peak memory and the forward pass alone."""
    import torch

    from ..score import score_ids

    model, _ = cached_model(model_name, "cpu", "float32")
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (n,), generator=gen).tolist()
    score_ids(model, ids[:300], 1)  # warm-up
    gc.collect()
    after_load = rss()
    times, rates = [], []
    with PeakRSS() as peak:
        score_ids(model, ids, 1)
    for _ in range(repeats):
        rates.append(matmul_flops())
        t = time.perf_counter()
        score_ids(model, ids, 1)
        times.append(time.perf_counter() - t)
    w, a = flops_per_token(model, n)
    fwd = forward_seconds(model, ids, max(1, repeats // 2))
    return {"times": times, "flops": rates, "w": w, "a": a, "after_load": after_load, "peak": peak.peak,
            "param_bytes": param_bytes(model), "forward": fwd, "n": n}


def forward_seconds(model, ids: list[int], repeats: int, chunk: int = 256) -> list[float]:
    """Where the time goes: the forward pass alone over ``ids[:-1]`` in chunks of ``chunk`` (logits of every
    position, no statistics), seconds of each repeat."""
    import torch

    n = len(ids)
    fwd = []
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            cache = new_cache(model)
            for s in range(0, n - 1, chunk):
                part = torch.tensor(ids[s : min(s + chunk, n - 1)]).unsqueeze(0)
                pos = torch.arange(s, s + part.shape[1]).unsqueeze(0)
                model(input_ids=part, position_ids=pos, use_cache=True, **cache_kwargs(model, cache))
            fwd.append(time.perf_counter() - t)
    return fwd


def bench_scoring(repeats: int, quick: bool) -> Result:
    n, model = (512, "smollm2-135m") if quick else (4096, "gemma-3-270m")  # quick: a smoke test
    c = run_child("scoring", model, str(n), str(repeats))
    scored = n - 1
    tok_s = scored / median(c["times"])
    flop_tok = c["w"] + c["a"]
    rate = median(c["flops"])
    roofline = rate / flop_tok
    frac = tok_s / roofline
    extra = c["peak"] - c["after_load"]
    fwd_s = scored / median(c["forward"])
    return Result(
        "scoring", f"tok/s, {model.split('-')[0]} {n} tok vs roofline", tok_s, roofline, "tok/s", frac, ">= 0.5 of roofline",
        frac >= 0.5 and extra <= GIB,
        details={
            "float32 matmul 2048^3 (GFLOP/s, each repeat)": [round(x / 1e9, 1) for x in c["flops"]],
            "FLOP per token: weights + attention (GFLOP)": [round(c["w"] / 1e9, 3), round(c["a"] / 1e9, 3)],
            "scoring seconds (each repeat)": [round(x, 2) for x in c["times"]],
            "forward pass alone (tok/s, fraction of roofline)": [round(fwd_s, 1), round(fwd_s / roofline, 3)],
            "statistics' share of the scoring time": round(1 - tok_s / fwd_s, 3),
            "memory: model / peak above load (GiB), goal <= 1": [round(c["param_bytes"] / GIB, 3), round(extra / GIB, 3)],
            "peak memory goal (<= model + 1 GiB) holds": extra <= GIB,
        },
        notes=["ratio = measured tokens/s / (matmul FLOP/s / FLOP per token); holds needs both the roofline "
               "fraction and the memory goal"],
    )
