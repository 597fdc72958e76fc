"""Generation with statistics (SmolLM2, temperature 1 / top-p 0.95, 512 tokens), three targets:

- ``generation``: float32 at batch 16, ``generate`` (``engine="auto"``) against the eager engine (the
  reference loop: dynamic cache, transformers' warpers), both measured here. Goal ≥ 2.5× (aim ≥ 210
  tok/s). Beside it, batch 1 against the memory-bandwidth roofline (weight bytes per step / measured copy
  bandwidth; aim: within 1.3×).
- ``batch``: float32 at batches 16, 32 and 64, tokens/s as a fraction of the compute roofline
  (float32 matmul FLOP/s measured here / FLOP per generated token). Goal ≥ 35% at the best batch.
- ``bf16``: bfloat16 weights at batch 16, ``generate`` with all its statistics against transformers'
  ``generate()`` at batch 16 with none (same model, dtype, warps). Goal ≥ 1.5×.

``hf_generate_with_stats`` (one sequence, statistics from its scores) is the baseline of ``memory``.
"""

from __future__ import annotations

from ..engine.models import cached_model
from .common import Result, Timed, copy_bandwidth, decode_flops_per_token, matmul_flops, median, param_bytes, say

SAMPLING = {"temperature": 1.0, "top_p": 0.95}


def hf_config(model, tokenizer, sampling, n: int, with_stats: bool):
    """transformers' ``GenerationConfig`` for our warps (EOS suppressed as ``on_eos="suppress"`` does)."""
    from transformers import GenerationConfig

    from ..core.sampling import eos_ids

    eos = eos_ids(tokenizer, model)
    return GenerationConfig(
        do_sample=not sampling.greedy, temperature=sampling.temperature or 1.0, top_k=sampling.top_k or 0,
        top_p=sampling.top_p, max_new_tokens=n, min_new_tokens=0,
        suppress_tokens=eos if sampling.on_eos == "suppress" else None,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0], eos_token_id=eos,
        output_scores=with_stats, output_logits=with_stats, return_dict_in_generate=True,
    )


def hf_generate_with_stats(model, tokenizer, prompt: str, sampling, n: int, seed: int = 0, block: int = 64):
    """The baseline of ``memory``: ``model.generate`` with scores and logits kept, statistics computed after.

    transformers keeps one ``[1, vocab]`` float32 tensor per step in ``scores`` (the warped ``q``
    logits) and another in ``logits`` (raw ``p``); the statistics are computed from them in blocks of
    ``block`` steps (``aep_lib.core.stats.token_stats``), as a careful user would. Returns a DataFrame.
    """
    import pandas as pd
    import torch

    from ..core.stats import token_stats

    enc = tokenizer(prompt, return_tensors="pt")
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**enc, generation_config=hf_config(model, tokenizer, sampling, n, True))
        tokens = out.sequences[0, enc["input_ids"].shape[1] :]
        cols: dict[str, list] = {}
        for a in range(0, len(tokens), block):
            tgt = tokens[a : a + block]
            raw = token_stats(torch.cat(out.logits[a : a + block]).float(), tgt, with_rank=True)
            samp = token_stats(torch.cat(out.scores[a : a + block]).float(), tgt, with_rank=False)
            for k, v in list(raw.items()) + [(f"{k}_samp", v) for k, v in samp.items()]:
                cols.setdefault(k, []).append(v)
    return pd.DataFrame({k: torch.cat(v).numpy() for k, v in cols.items()})


def hf_generate_batch(model, tokenizer, prompts: list[str], sampling, n: int, seed: int = 0) -> int:
    """transformers' ``generate()`` on a left-padded batch, no scores kept: the tokens it made."""
    import torch

    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**enc, generation_config=hf_config(model, tokenizer, sampling, n, False))
    return int(out.sequences[:, enc["input_ids"].shape[1] :].numel())


def batch_prompts(batch: int) -> list[str]:
    from ..corpora import load_prompts

    prompts = list(load_prompts().values())
    return [prompts[i % len(prompts)] for i in range(batch)]


def timed_generate(model, tok, batch: int, n: int, engine: str, seed: int = 0) -> Timed:
    """Our ``generate`` of ``batch`` × ``n`` tokens; its wall and CPU seconds."""
    from ..core.sampling import Sampling
    from ..engine.generate import generate

    prompts = batch_prompts(batch)
    with Timed() as t:
        generate(model, tok, prompts, list(range(seed, seed + batch)), Sampling(**SAMPLING), n, progress=False,
                 engine=engine)
    return t


def compute_roofline(model, tok, n: int, flops: list[float]) -> float:
    """Generated tokens/s at the compute roofline: the matmul rate measured beside the runs (median of
    ``flops``, FLOP/s) over the FLOP of one generated token (weights, attention over the mean context)."""
    n_prompt = round(median([len(tok(p)["input_ids"]) for p in batch_prompts(8)]))
    return median(flops) / decode_flops_per_token(model, n_prompt, n)


def rates(times: list[Timed], tokens: int) -> tuple[list[float], list[float]]:
    """Tokens/s of each repeat by the wall clock and by CPU time."""
    return [round(tokens / t.wall, 1) for t in times], [round(tokens / t.cpu, 1) for t in times]


def bench_generation(repeats: int, quick: bool) -> Result:
    import torch

    batch, n, n_b1 = (4, 16, 16) if quick else (16, 512, 512)
    model, tok = cached_model("smollm2-135m", "cpu", "float32")
    timed_generate(model, tok, 2, 4, "auto")  # warm-up
    timed_generate(model, tok, 2, 4, "eager")
    ours, eager, b1, flops = [], [], [], []
    for r in range(repeats):
        flops.append(matmul_flops())
        ours.append(timed_generate(model, tok, batch, n, "auto", seed=r))
        eager.append(timed_generate(model, tok, batch, n, "eager", seed=r))
        b1.append(timed_generate(model, tok, 1, n_b1, "auto", seed=r))
        say(f"  generation repeat {r + 1}/{repeats}: ours {batch * n / ours[-1].wall:.1f} tok/s, eager "
            f"{batch * n / eager[-1].wall:.1f}, ours b1 {n_b1 / b1[-1].wall:.1f}")
    (o, o_cpu), (e, e_cpu), (b, b_cpu) = rates(ours, batch * n), rates(eager, batch * n), rates(b1, n_b1)
    bandwidth = copy_bandwidth()
    roof_b1 = bandwidth / param_bytes(model)  # steps/s when each step reads every weight once
    roof = compute_roofline(model, tok, n, flops)
    ratio = median(o) / median(e)
    return Result(
        "generation", f"tok/s, float32 b{batch} ours vs eager", median(o), median(e), "tok/s", ratio, ">= 2.5x",
        ratio >= 2.5,
        details={f"ours (engine=auto) batch {batch} x {n} tok: tok/s wall, CPU time": [o, o_cpu],
                 f"today's eager engine batch {batch} x {n} tok: tok/s wall, CPU time": [e, e_cpu],
                 "CPU-time ratio (ours / eager)": round(median(o_cpu) / median(e_cpu), 2),
                 "aim >= 210 tok/s: wall, CPU time": [median(o) >= 210, median(o_cpu) >= 210],
                 f"batch {batch}: float32 matmul GFLOP/s, compute roofline tok/s, fraction ours, fraction eager": [
                     round(median(flops) / 1e9, 1), round(roof, 1), round(median(o) / roof, 3),
                     round(median(e) / roof, 3)],
                 f"ours batch 1 x {n_b1} tok: tok/s wall, CPU time": [b, b_cpu],
                 "batch 1: copy bandwidth GB/s (read + write), weights MiB, roofline tok/s": [
                     round(bandwidth / 1e9, 1), round(param_bytes(model) / 2**20), round(roof_b1, 1)],
                 "batch 1: roofline / ours (aim <= 1.3): wall, CPU time": [
                     round(roof_b1 / median(b), 2), round(roof_b1 / median(b_cpu), 2)],
                 "torch threads": torch.get_num_threads()},
        notes=["both engines in this process, interleaved; the eager engine is the loop before the static cache "
               "(dynamic cache, transformers' arg-sort top-p); 'CPU time' = this process's CPU seconds"],
    )


def bench_batch(repeats: int, quick: bool) -> Result:
    """float32 generation at batches 16, 32, 64 against the compute roofline."""
    batches, n = ((2, 4), 8) if quick else ((16, 32, 64), 256)
    model, tok = cached_model("smollm2-135m", "cpu", "float32")
    timed_generate(model, tok, 2, 4, "auto")
    n_prompt = round(median([len(tok(p)["input_ids"]) for p in batch_prompts(8)]))
    flop = decode_flops_per_token(model, n_prompt, n)
    fractions, details = {}, {}
    for batch in batches:
        times, peaks = [], []
        for r in range(max(1, repeats)):
            peaks.append(matmul_flops())
            times.append(timed_generate(model, tok, batch, n, "auto", seed=r))
        wall, cpu = rates(times, batch * n)
        roof = median(peaks) / flop
        fractions[batch] = median(wall) / roof
        details[f"batch {batch} x {n} tok: tok/s wall, CPU time, roofline tok/s, fraction (wall, CPU)"] = [
            median(wall), median(cpu), round(roof, 1), round(fractions[batch], 3), round(median(cpu) / roof, 3)]
        say(f"  batch {batch}: {median(wall):.1f} tok/s ({fractions[batch]:.2f} of the roofline)")
    best = max(fractions, key=fractions.get)
    return Result(
        "batch", f"roofline fraction, float32 best b<={batches[-1]}", fractions[best], 1.0, "frac", fractions[best],
        ">= 0.35", fractions[best] >= 0.35,
        details={**details, "FLOP per generated token (GFLOP)": round(flop / 1e9, 3), "best batch": best},
        notes=["roofline = float32 matmul FLOP/s (2048^3, measured beside each run) / FLOP per token (weights "
               "and attention over the mean context)"],
    )


def bench_bf16(repeats: int, quick: bool) -> Result:
    """bfloat16 at batch 16: ours with all statistics against transformers' ``generate()`` with none."""
    import torch

    from ..core.sampling import Sampling
    from ..engine.models import cpu_features, load_model

    batch, n = (4, 16) if quick else (16, 512)
    model, tok = cached_model("smollm2-135m", "cpu", "bfloat16")
    plain, _ = load_model("smollm2-135m", "cpu", "bfloat16", bf16_kernels=False)  # as transformers loads it
    prompts = batch_prompts(batch)
    timed_generate(model, tok, 2, 4, "auto")
    hf_generate_batch(plain, tok, prompts[:2], Sampling(**SAMPLING), 4)
    ours, base, flops = [], [], []
    for r in range(repeats):
        flops.append(matmul_flops(dtype=torch.bfloat16))
        ours.append(timed_generate(model, tok, batch, n, "auto", seed=r))
        with Timed() as t:
            made = hf_generate_batch(plain, tok, prompts, Sampling(**SAMPLING), n, seed=r)
        base.append(t)
        say(f"  bf16 repeat {r + 1}/{repeats}: ours {batch * n / ours[-1].wall:.1f} tok/s, "
            f"generate() {made / base[-1].wall:.1f}")
    (o, o_cpu), (b, b_cpu) = rates(ours, batch * n), rates(base, batch * n)
    roof = compute_roofline(model, tok, n, flops)
    ratio = median(o) / median(b)
    return Result(
        "bf16", f"tok/s, bf16 b{batch} ours+stats vs generate()", median(o), median(b), "tok/s", ratio, ">= 1.5x",
        ratio >= 1.5,
        details={f"ours, all statistics, batch {batch} x {n} tok: tok/s wall, CPU time": [o, o_cpu],
                 f"transformers generate(), no statistics, batch {batch}: tok/s wall, CPU time": [b, b_cpu],
                 "CPU-time ratio": round(median(o_cpu) / median(b_cpu), 2),
                 f"batch {batch}: bfloat16 matmul GFLOP/s, compute roofline tok/s, fraction ours, fraction generate()": [
                     round(median(flops) / 1e9, 1), round(roof, 1), round(median(o) / roof, 3),
                     round(median(b) / roof, 3)],
                 "CPU": cpu_features(), "ours: kernels (models.load_model)": model.aep_kernels},
        notes=["same model (bfloat16 weights), warps (temperature 1, top-p 0.95, EOS suppressed) and prompts; "
               "generate() runs the model as transformers loads it (bf16_kernels=False)"],
    )
