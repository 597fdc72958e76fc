"""``memory``: Gemma (262k vocabulary), 1 sequence × 2,048 tokens, peak resident memory of our
``generate`` and of the transformers baseline, each in a fresh process (goal ≥ 2× lower; ours grows
with length by the KV cache only).

The measurement itself runs in a child process (``memory_child``, launched through ``run_child``).
"""

from __future__ import annotations

import gc
import time

from ..engine.memory import kv_cache_bytes
from ..engine.models import cached_model
from .common import GIB, MIB, PeakRSS, Result, param_bytes, rss, ru_maxrss, run_child
from .generation import hf_generate_with_stats


def memory_child(which: str, model_name: str, n: int) -> dict:
    """In the child process: load ``model_name``, generate ``n`` tokens with ``which`` (``ours`` or
    ``baseline``) and report the resident memory after the load and at the peak."""
    from ..core.sampling import Sampling
    from ..corpora import load_prompts
    from ..engine.generate import generate

    model, tok = cached_model(model_name, "cpu", "float32")
    prompt = load_prompts()["p01"]
    sampling = Sampling(temperature=1.0, top_p=0.95)
    gc.collect()
    after_load = rss()
    t = time.perf_counter()
    with PeakRSS() as peak:
        if which == "ours":
            generate(model, tok, [prompt], [0], sampling, n, progress=False)
        else:
            hf_generate_with_stats(model, tok, prompt, sampling, n)
    return {"which": which, "n": n, "after_load": after_load, "peak": peak.peak, "ru_maxrss": ru_maxrss(),
            "seconds": time.perf_counter() - t, "kv_bytes": kv_cache_bytes(model.config, n),
            "param_bytes": param_bytes(model), "vocab": int(model.config.vocab_size)}


def bench_memory(repeats: int, quick: bool) -> Result:
    model = "smollm2-135m" if quick else "gemma-3-270m"  # quick: the smaller model, a smoke test
    n_long, n_short = (64, 16) if quick else (2048, 512)
    base = run_child("memory", "baseline", model, str(n_long))
    ours = run_child("memory", "ours", model, str(n_long))
    short = run_child("memory", "ours", model, str(n_short))
    # Without the periodic malloc_trim of generate (memory.release_free_memory), both sides measured
    # again: glibc keeps the pages the per-step blocks free and the heap grows every step.
    untuned = {"AEP_TRIM_EVERY": "0"}
    untuned_ours = run_child("memory", "ours", model, str(n_long), env=untuned)
    growth = ours["peak"] - ours["after_load"] - (short["peak"] - short["after_load"])
    kv_growth = ours["kv_bytes"] - short["kv_bytes"]
    steps_bytes = 2 * n_long * ours["vocab"] * 4
    ratio = base["peak"] / ours["peak"]
    return Result(
        "memory", f"peak RSS, {model.split('-')[0]} 1 x {n_long} tok", ours["peak"] / GIB, base["peak"] / GIB, "GiB",
        ratio, ">= 2x lower", ratio >= 2,
        details={
            "model weights (GiB)": round(ours["param_bytes"] / GIB, 3),
            "ours: after load / peak / above load (GiB)": [round(ours[k] / GIB, 3) for k in ("after_load", "peak")]
            + [round((ours["peak"] - ours["after_load"]) / GIB, 3)],
            "baseline: after load / peak / above load (GiB)": [round(base[k] / GIB, 3) for k in ("after_load", "peak")]
            + [round((base["peak"] - base["after_load"]) / GIB, 3)],
            "above-load ratio (baseline / ours)": round((base["peak"] - base["after_load"])
                                                        / max(ours["peak"] - ours["after_load"], 1), 1),
            "baseline's two [steps, vocab] float32 tensors (GiB)": round(steps_bytes / GIB, 3),
            f"ours above load at {n_short} tok (MiB)": round((short["peak"] - short["after_load"]) / MIB, 1),
            f"ours above load at {n_long} tok (MiB)": round((ours["peak"] - ours["after_load"]) / MIB, 1),
            f"growth {n_short}->{n_long} tok: measured vs KV cache (MiB)": [round(growth / MIB, 1),
                                                                          round(kv_growth / MIB, 1)],
            "seconds (ours, baseline)": [round(ours["seconds"], 1), round(base["seconds"], 1)],
            "without the periodic malloc_trim (AEP_TRIM_EVERY=0): ours peak (GiB), baseline / ours": [
                round(untuned_ours["peak"] / GIB, 3), round(base["peak"] / untuned_ours["peak"], 2)],
            f"without the periodic malloc_trim: ours above load at {n_long} tok (MiB)": round(
                (untuned_ours["peak"] - untuned_ours["after_load"]) / MIB, 1),
        },
        notes=["each in a fresh process; peak = resident high-water mark during generation (VmHWM reset after "
               "the model load), ratio on the whole-process peak"],
    )
