"""``scoring``: a 4,096-token text under Gemma, bfloat16 weights against float32 (today's default), each in
a child process of its own: tokens/s, the fraction of each dtype's compute roofline (matmul FLOP/s measured
in that process / FLOP per token) and peak memory. Goals: bfloat16 ≥ 2× float32 (~165 tok/s here) and peak
≤ model + 1 GiB.

The measurement itself runs in child processes (``scoring_child``, launched through ``run_child``).
"""

from __future__ import annotations

import gc
import time

from ..engine.models import cache_kwargs, cached_model, new_cache
from .common import GIB, PeakRSS, Result, flops_per_token, matmul_flops, median, param_bytes, rss, run_child


def scoring_child(model_name: str, n: int, repeats: int, dtype: str = "float32") -> dict:
    """In the child process: score ``n`` random tokens with ``model_name`` in ``dtype`` ``repeats`` times,
    with the matmul rate (in that dtype) beside each repeat, the peak memory and the forward pass alone."""
    import torch

    from ..engine.score import score_ids

    model, _ = cached_model(model_name, "cpu", dtype)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (n,), generator=gen).tolist()
    score_ids(model, ids[:300], 1)  # warm-up
    gc.collect()
    after_load = rss()
    times, rates = [], []
    with PeakRSS() as peak:
        score_ids(model, ids, 1)
    for _ in range(repeats):
        rates.append(matmul_flops(dtype=getattr(torch, dtype)))
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
    n, model = (128, "smollm2-135m") if quick else (4096, "gemma-3-270m")  # quick: a smoke test
    runs = {dtype: run_child("scoring", model, str(n), str(repeats), dtype) for dtype in ("float32", "bfloat16")}
    scored = n - 1
    details, rate = {}, {}
    for dtype, c in runs.items():
        rate[dtype] = scored / median(c["times"])
        roofline = median(c["flops"]) / (c["w"] + c["a"])
        fwd_s = scored / median(c["forward"])
        details |= {
            f"{dtype}: tok/s (each repeat)": [round(scored / x, 1) for x in c["times"]],
            f"{dtype}: matmul 2048^3 GFLOP/s, roofline tok/s, fraction": [
                round(median(c["flops"]) / 1e9, 1), round(roofline, 1), round(rate[dtype] / roofline, 3)],
            f"{dtype}: forward pass alone tok/s, statistics' share of the time": [
                round(fwd_s, 1), round(1 - rate[dtype] / fwd_s, 3)],
            f"{dtype}: model / peak above load (GiB)": [round(c["param_bytes"] / GIB, 3),
                                                       round((c["peak"] - c["after_load"]) / GIB, 3)],
        }
    c = runs["bfloat16"]
    extra = c["peak"] - c["after_load"]
    ratio = rate["bfloat16"] / rate["float32"]
    details["FLOP per token: weights + attention (GFLOP)"] = [round(c["w"] / 1e9, 3), round(c["a"] / 1e9, 3)]
    details["bfloat16 peak memory goal (<= model + 1 GiB) holds"] = extra <= GIB
    return Result(
        "scoring", f"tok/s, {model.split('-')[0]} {n} tok bf16 vs float32", rate["bfloat16"], rate["float32"], "tok/s",
        ratio, ">= 2x, <= model+1G", ratio >= 2 and extra <= GIB, details=details,
        notes=["each dtype in a fresh child process; holds needs both the speed-up and the memory goal"],
    )
