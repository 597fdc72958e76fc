"""``generation``: our ``generate`` at batch 16 against transformers' ``generate`` one sequence at a time
with the statistics computed afterwards from its scores and logits (aggregate tokens/s; goal ≥ 5×)."""

from __future__ import annotations

import time

from ..models import cached_model
from .common import Result, median, say


def hf_generate_with_stats(model, tokenizer, prompt: str, sampling, n: int, seed: int = 0, block: int = 64):
    """The baseline: ``model.generate`` with scores and logits kept, statistics computed afterwards.

    transformers keeps one ``[1, vocab]`` float32 tensor per step in ``scores`` (the warped ``q``
    logits) and another in ``logits`` (raw ``p``); the statistics are computed from them in blocks of
    ``block`` steps (``aep_lib.stats.token_stats``), as a careful user would. Returns a DataFrame.
    """
    import pandas as pd
    import torch
    from transformers import GenerationConfig

    from ..sampling import eos_ids
    from ..stats import token_stats

    enc = tokenizer(prompt, return_tensors="pt")
    eos = eos_ids(tokenizer, model)
    cfg = GenerationConfig(
        do_sample=not sampling.greedy, temperature=sampling.temperature or 1.0, top_k=sampling.top_k or 0,
        top_p=sampling.top_p, max_new_tokens=n, min_new_tokens=0,
        suppress_tokens=eos if sampling.on_eos == "suppress" else None,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0], eos_token_id=eos,
        output_scores=True, output_logits=True, return_dict_in_generate=True,
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**enc, generation_config=cfg)
        tokens = out.sequences[0, enc["input_ids"].shape[1] :]
        cols: dict[str, list] = {}
        for a in range(0, len(tokens), block):
            tgt = tokens[a : a + block]
            raw = token_stats(torch.cat(out.logits[a : a + block]).float(), tgt, with_rank=True)
            samp = token_stats(torch.cat(out.scores[a : a + block]).float(), tgt, with_rank=False)
            for k, v in list(raw.items()) + [(f"{k}_samp", v) for k, v in samp.items()]:
                cols.setdefault(k, []).append(v)
    return pd.DataFrame({k: torch.cat(v).numpy() for k, v in cols.items()})


def bench_generation(repeats: int, quick: bool) -> Result:
    import torch

    from ..corpora import load_prompts
    from ..generate import generate
    from ..sampling import Sampling

    batch, n, n_base, n_b1 = (4, 16, 1, 16) if quick else (16, 512, 2, 512)
    model, tok = cached_model("smollm2-135m", "cpu", "float32")
    sampling = Sampling(temperature=1.0, top_p=0.95)
    prompts = list(load_prompts().values())
    batch_prompts = [prompts[i % len(prompts)] for i in range(batch)]
    ours, ours_b1, base = [], [], []
    generate(model, tok, prompts[:2], [0, 1], sampling, 4, progress=False)  # warm-up
    hf_generate_with_stats(model, tok, prompts[0], sampling, 4)
    for r in range(repeats):
        t = time.perf_counter()
        generate(model, tok, batch_prompts, list(range(batch)), sampling, n, progress=False)
        ours.append(batch * n / (time.perf_counter() - t))
        t = time.perf_counter()
        generate(model, tok, prompts[:1], [r], sampling, n_b1, progress=False)
        ours_b1.append(n_b1 / (time.perf_counter() - t))
        t = time.perf_counter()
        for i in range(n_base):
            hf_generate_with_stats(model, tok, prompts[i % len(prompts)], sampling, n, seed=r * 100 + i)
        base.append(n_base * n / (time.perf_counter() - t))
        say(f"  generation repeat {r + 1}/{repeats}: ours b{batch} {ours[-1]:.1f} tok/s, ours b1 {ours_b1[-1]:.1f}, "
            f"baseline {base[-1]:.1f}")
    o, b = median(ours), median(base)
    return Result(
        "generation", f"tok/s, ours b{batch} vs HF 1-by-1", o, b, "tok/s", o / b, ">= 5x", o / b >= 5,
        details={f"ours batch {batch} x {n} tok (tok/s, each repeat)": [round(x, 1) for x in ours],
                 f"ours batch 1 x {n_b1} tok (tok/s)": [round(x, 1) for x in ours_b1],
                 f"baseline {n_base} x {n} tok one at a time (tok/s)": [round(x, 1) for x in base],
                 "ours batch 1 / baseline": round(median(ours_b1) / b, 2),
                 "torch threads": torch.get_num_threads()},
        notes=[f"baseline measured on {n_base} sequences x {n} tokens and quoted as tokens/s (it runs one "
               "sequence at a time, so its rate does not depend on how many)"],
    )
