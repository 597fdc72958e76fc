"""``long``: a 40,000-token text under SmolLM2 (context 8,192), far beyond its context window, scored with a
sliding window of stride 4,096 and 8,192: tokens/s and peak memory, against scoring one context's worth of
the same text in one pass (the in-context rate, measured in the same child process). Goals: every token
scored once, peak ≤ model + 1 GiB, and stride 8,192 at ≥ 0.5 of the in-context rate (time linear in the
length).

The measurement runs in a child process (``long_child``), so that its peak memory is its own.
"""

from __future__ import annotations

import gc

from ..engine.models import cached_model
from .common import GIB, PeakRSS, Result, Timed, param_bytes, rss, run_child

STRIDES = (8192, 4096)
LONG_TOKENS = 40_000  # a text five times SmolLM2's context window


def long_child(model_name: str, n: int, strides: list[int], context: int | None = None) -> dict:
    """In the child: score ``n`` random tokens with each stride, and the first context's worth in one pass;
    seconds (wall, CPU), rows and peak memory above the load of each."""
    import torch

    from ..engine.score import context_window, score_ids

    model, _ = cached_model(model_name, "cpu", "float32")
    context = context or context_window(model)
    ids = torch.randint(0, model.config.vocab_size, (n,), generator=torch.Generator().manual_seed(0)).tolist()
    score_ids(model, ids[:300], 1)  # warm-up
    gc.collect()
    after_load = rss()
    out = {"n": n, "context": context, "param_bytes": param_bytes(model), "after_load": after_load, "runs": {}}
    for label, part, stride in [("in-context", ids[:context], None)] + [(f"stride {s}", ids, s) for s in strides]:
        with PeakRSS() as peak, Timed() as t:
            df = score_ids(model, part, 1, max_context=context, stride=stride)
        out["runs"][label] = {"tokens": len(part) - 1, "rows": len(df), "wall": t.wall, "cpu": t.cpu,
                              "peak_above_load": peak.peak - after_load,
                              "positions_continuous": bool((df["position"].diff().iloc[1:] == 1).all())}
        del df
        gc.collect()
    return out


def bench_long(repeats: int, quick: bool, n: int | None = None) -> Result:
    """One child run (a 40,000-token text takes several minutes per stride on 2 cores; ``repeats`` is not
    used)."""
    n, strides, context = (600, [256, 128], 256) if quick else (n or LONG_TOKENS, list(STRIDES), None)
    c = run_child("long", "smollm2-135m", str(n), ",".join(map(str, strides)), str(context or 0))
    runs = c["runs"]
    base = runs["in-context"]["tokens"] / runs["in-context"]["wall"]
    first = runs[f"stride {strides[0]}"]
    rate = first["tokens"] / first["wall"]
    complete = all(r["rows"] == r["tokens"] and r["positions_continuous"] for r in runs.values())
    bounded = all(r["peak_above_load"] <= GIB for r in runs.values())
    ratio = rate / base
    details = {"text": f"{n} random tokens, context {c['context']}, model {c['param_bytes'] / GIB:.2f} GiB (float32)"}
    for label, r in runs.items():
        details[f"{label}: tok/s wall, CPU time; rows / tokens; peak above load (GiB)"] = [
            round(r["tokens"] / r["wall"], 1), round(r["tokens"] / r["cpu"], 1), f"{r['rows']}/{r['tokens']}",
            round(r["peak_above_load"] / GIB, 3)]
    details["every token scored once (rows = tokens, positions continuous)"] = complete
    details["peak <= model + 1 GiB"] = bounded
    return Result(
        "long", f"tok/s, {n} tok stride {strides[0]} vs in-context", rate, base, "tok/s", ratio, ">= 0.5x, complete",
        ratio >= 0.5 and complete and bounded, details=details,
        notes=[f"a {n}-token text of random ids; the in-context baseline scores the first {c['context']} tokens in "
               f"one pass"],
    )
