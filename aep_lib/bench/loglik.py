"""``loglik`` and ``texts``: scoring with every statistic against the plain log-likelihood pass, in one process.

The plain baseline is what lm-evaluation-harness's ``loglikelihood_rolling`` does: transformers' forward over
each window (``model(ids).logits``), ``log_softmax``, the gather of the target token, nothing else.

- ``loglik``: a ~10,000-token text under SmolLM2 in 8,192-token windows (``score.sliding_windows``, stride
  8,192), ``score_ids`` with every statistic against the baseline over the same windows. Goals: ≥ 1.0× and
  peak ≤ model + 1 GiB.
- ``texts``: 64 texts of 100-300 tokens, SmolLM2 and Gemma: ``score_many`` (batched) against one text at a
  time (``batch_size=1``: the loop ``detect.score_texts`` ran before batching) and against the plain baseline
  run batched (right padding, attention mask). Goals: ≥ 3× one at a time, ≥ 1.0× the baseline; every
  statistic within 1e-4 bits of one at a time.

Both in float32, and in bfloat16 where the CPU has native bfloat16 (else reported as skipped: emulated
bfloat16 measures the emulation). Ours and the baselines alternate within each repeat; medians.
"""

from __future__ import annotations

import gc
import time

from ..engine.models import cached_model, cpu_features
from .common import GIB, PeakRSS, Result, median, param_bytes, rss, say

LONG_TOKENS = 10_006
WINDOW = 8192


def plain_windows(model, ids, windows) -> float:
    """The baseline over ``windows``: forward, log_softmax, gather; the summed log-likelihood (nats)."""
    import torch

    total = 0.0
    with torch.no_grad():
        for begin, first, end in windows:
            logits = model(input_ids=ids[begin : end - 1].unsqueeze(0)).logits[0]
            logp = torch.log_softmax(logits[first - 1 - begin :], -1)
            total += float(logp.gather(-1, ids[first:end].unsqueeze(-1)).sum())
            del logits, logp
    return total


def plain_batched(model, texts, batch: int = 16) -> float:
    """The baseline over many texts, ``batch`` at a time, right-padded with an attention mask."""
    import torch

    total = 0.0
    with torch.no_grad():
        for a in range(0, len(texts), batch):
            part = texts[a : a + batch]
            width = max(len(t) for t in part)
            ids = torch.zeros((len(part), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for b, t in enumerate(part):
                ids[b, : len(t)], mask[b, : len(t)] = t, 1
            logits = model(input_ids=ids, attention_mask=mask).logits
            logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            total += float((logp * mask[:, 1:]).sum())
            del logits, logp
    return total


def dtypes() -> tuple[list[str], list[str]]:
    """The dtypes measured here, and notes on those skipped."""
    if cpu_features()["bf16"]:
        return ["float32", "bfloat16"], []
    return ["float32"], ["bfloat16 skipped: this CPU has no native bfloat16 (emulated, it measures the emulation)"]


def bench_loglik(repeats: int, quick: bool) -> Result:
    import torch

    from ..engine.score import score_ids, sliding_windows

    n, window = (600, 256) if quick else (LONG_TOKENS, WINDOW)
    kinds, notes = dtypes()
    details, ratio, peak_ok, rates = {}, {}, True, {}
    for dtype in kinds:
        model, _ = cached_model("smollm2-135m", "cpu", dtype)
        ids = torch.randint(0, model.config.vocab_size, (n,), generator=torch.Generator().manual_seed(0))
        windows = sliding_windows(n, 1, window, window)
        score_ids(model, ids[:300].tolist(), 1)  # warm-up
        gc.collect()
        ours, base, peaks = [], [], []
        for r in range(repeats):
            after = rss()
            with PeakRSS() as peak:
                t = time.perf_counter()
                df = score_ids(model, ids.tolist(), 1, max_context=window, stride=window)
                ours.append(time.perf_counter() - t)
            peaks.append(peak.peak - after)
            t = time.perf_counter()
            ll = plain_windows(model, ids, windows)
            base.append(time.perf_counter() - t)
            say(f"  loglik {dtype} repeat {r + 1}/{repeats}: ours {ours[-1]:.1f} s, plain {base[-1]:.1f} s")
        gap = abs(-df["surprisal_raw"].sum() * 0.6931471805599453 - ll)
        rates[dtype] = (n - 1) / median(ours)
        ratio[dtype] = median(base) / median(ours)
        peak_ok &= max(peaks) <= GIB
        details |= {
            f"{dtype}: ours tok/s (each repeat)": [round((n - 1) / x, 1) for x in ours],
            f"{dtype}: plain baseline tok/s (each repeat)": [round((n - 1) / x, 1) for x in base],
            f"{dtype}: ratio (medians), peak above load GiB (max), model GiB": [
                round(ratio[dtype], 3), round(max(peaks) / GIB, 3), round(param_bytes(model) / GIB, 3)],
            f"{dtype}: |sum log p ours - plain| (nats, whole text)": float(f"{gap:.3g}"),
        }
    r32 = ratio["float32"]
    return Result("loglik", f"tok/s, smollm2 {n} tok, windows {window}", rates["float32"],
                  rates["float32"] / r32, "tok/s", r32, ">= 1.0x, <= model+1G", r32 >= 1.0 and peak_ok,
                  details=details, notes=[*notes, "one process; every statistic (ours) against forward + log_softmax "
                                          "+ gather over the same windows (lm-evaluation-harness)"])


def many_texts(model, n_texts: int, low: int, high: int):
    import torch

    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(low, high + 1, (n_texts,), generator=gen).tolist()
    return [torch.randint(0, model.config.vocab_size, (m,), generator=gen) for m in lengths]


def bench_texts(repeats: int, quick: bool) -> Result:
    from ..engine.batch_score import score_many

    n_texts, low, high = (8, 20, 60) if quick else (64, 100, 300)
    models = ["smollm2-135m"] if quick else ["smollm2-135m", "gemma-3-270m"]
    kinds, notes = dtypes()
    details, worst_alone, worst_plain, first_rate = {}, float("inf"), float("inf"), None
    for name in models:
        for dtype in kinds:
            model, _ = cached_model(name, "cpu", dtype)
            texts = many_texts(model, n_texts, low, high)
            items = [(t.tolist(), 1) for t in texts]
            score_many(model, items[:2])  # warm-up
            tokens = sum(len(t) - 1 for t in texts)
            ours, alone, plain, gap = [], [], [], 0.0
            for r in range(repeats):
                t = time.perf_counter()
                batched = score_many(model, items)
                ours.append(time.perf_counter() - t)
                t = time.perf_counter()
                single = score_many(model, items, batch_size=1)
                alone.append(time.perf_counter() - t)
                t = time.perf_counter()
                plain_batched(model, texts)
                plain.append(time.perf_counter() - t)
                gap = max(gap, max(float((a[c] - b[c]).abs().max()) for a, b in zip(batched, single)
                                   for c in ("surprisal_raw", "entropy_raw", "varentropy_raw")))
                say(f"  texts {name} {dtype} repeat {r + 1}/{repeats}: batched {ours[-1]:.1f} s, one at a time "
                    f"{alone[-1]:.1f} s, plain batched {plain[-1]:.1f} s")
            rate = tokens / median(ours)
            vs_alone, vs_plain = median(alone) / median(ours), median(plain) / median(ours)
            worst_alone, worst_plain = min(worst_alone, vs_alone), min(worst_plain, vs_plain)
            first_rate = first_rate or (rate, tokens / median(alone))
            details |= {
                f"{name} {dtype}: batched / one at a time / plain batched tok/s": [
                    round(rate, 1), round(tokens / median(alone), 1), round(tokens / median(plain), 1)],
                f"{name} {dtype}: ratio vs one at a time, vs plain batched": [round(vs_alone, 3), round(vs_plain, 3)],
                f"{name} {dtype}: max |batched - one at a time| (bits)": float(f"{gap:.3g}"),
            }
            del model
            gc.collect()
    holds = worst_alone >= 3 and worst_plain >= 1.0
    return Result("texts", f"tok/s, {n_texts} texts {low}-{high} tok", first_rate[0], first_rate[1], "tok/s",
                  worst_alone, ">= 3x alone, >= 1x plain", holds, details=details,
                  notes=[*notes, "ratio: the worst model's batched against one text at a time (score_many "
                         "batch_size=1); the plain baseline: forward + log_softmax + gather, 16 texts a batch, "
                         "right-padded"])
