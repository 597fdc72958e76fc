"""``gpu``: only where CUDA is present: a Llama-3.1-8B-shaped model with random bf16 weights; generation at
batch 1 and 32 against the memory-bandwidth roofline, scoring against the bf16 compute roofline."""

from __future__ import annotations

import math
import time

from ..engine.models import cache_kwargs, new_cache
from .common import GIB, MIB, Result, flops_per_token, median, param_bytes

PROMPT = "The history of the lighthouse begins"


class IdTokenizer:
    """The least a tokenizer must do for ``generate``: prompts become fixed ids, ids print as numbers."""

    def __init__(self, vocab_size: int, eos: int):
        self.vocab_size, self.eos_token_id, self.pad_token_id = vocab_size, eos, eos

    def __call__(self, text, add_special_tokens=True, **_):
        return {"input_ids": [1 + (ord(ch) * 7919) % (self.vocab_size - 2) for ch in text]}

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(str(i) for i in ids)


def llama_8b_config(layers: int | None = None):
    """The shape of Llama 3.1 8B (weights are random: speed does not depend on their values)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=layers or 32, num_attention_heads=32, num_key_value_heads=8,
                       max_position_embeddings=131072, rope_theta=500000.0, tie_word_embeddings=False,
                       bos_token_id=128000, eos_token_id=128001)


def sync(dev) -> None:
    """Wait for the device's queued work (CUDA only), so that the clock measures it."""
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def device_rates(dev, dtype) -> tuple[float, float]:
    """``(copy bandwidth B/s counting read + write, matmul FLOP/s)`` of ``dev`` in ``dtype``."""
    import torch

    n, size = (GIB // 2, 8192) if dev.type == "cuda" else (16 * MIB, 512)
    x = torch.empty(n, dtype=dtype, device=dev)
    y = torch.empty_like(x)
    y.copy_(x)
    sync(dev)
    t = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    sync(dev)
    bandwidth = 2 * x.numel() * x.element_size() * 10 / (time.perf_counter() - t)
    del x, y
    a = torch.randn(size, size, device=dev, dtype=dtype)
    a @ a
    sync(dev)
    t = time.perf_counter()
    for _ in range(10):
        a @ a
    sync(dev)
    return bandwidth, 2 * size**3 * 10 / (time.perf_counter() - t)


def generate_rate(model, tok, dev, sampling, batch: int, n: int, repeats: int) -> float:
    """Our ``generate`` at ``batch`` × ``n`` tokens, tokens/s (median of ``repeats``, after a warm-up)."""
    from ..engine.generate import generate

    generate(model, tok, ["warm up"] * batch, list(range(batch)), sampling, 4, progress=False)
    sync(dev)
    times = []
    for r in range(max(1, repeats)):
        t = time.perf_counter()
        generate(model, tok, [PROMPT] * batch, list(range(r, r + batch)), sampling, n, progress=False)
        sync(dev)
        times.append(time.perf_counter() - t)
    return batch * n / median(times)


def plain_loop_rate(model, dev, batch: int, width: int, n: int) -> float:
    """The model alone: a plain KV-cache loop, greedy argmax, no statistics; tokens/s."""
    import torch

    ids = torch.full((batch, width), 5, device=dev)
    with torch.no_grad():
        cache = new_cache(model)
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **cache_kwargs(model, cache))
        sync(dev)
        t = time.perf_counter()
        for step in range(n):
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            out = model(input_ids=nxt, position_ids=torch.full((batch, 1), width + step, device=dev),
                        use_cache=True, **cache_kwargs(model, cache))
        sync(dev)
        return batch * n / (time.perf_counter() - t)


def step_costs(cfg, dev, sampling) -> dict[str, float]:
    """Where a generation step's time goes outside the model at batch 32: warps, sampling noise,
    statistics (ms each)."""
    import torch

    from ..core.sampling import SamplingWarp, sample
    from ..core.stats import token_stats

    logits = torch.randn(32, cfg.vocab_size, device=dev)
    warp = SamplingWarp(sampling, [cfg.eos_token_id])
    parts = {}
    for name, fn in [("warp (top-p)", lambda: warp(logits)),
                     ("sample (Gumbel noise, made on the device)", lambda: sample(logits, list(range(32)), 3)),
                     ("statistics p and q (float64)", lambda: (token_stats(logits, logits.argmax(-1)),
                                                               token_stats(logits, logits.argmax(-1), False)))]:
        fn()
        sync(dev)
        t = time.perf_counter()
        for _ in range(5):
            fn()
        sync(dev)
        parts[name] = round((time.perf_counter() - t) / 5 * 1000, 2)
    return parts


def score_rate(model, cfg, dev, n_score: int, repeats: int) -> float:
    """``score_ids`` over ``n_score`` random tokens (bf16 weights, float32 logits, float64 statistics),
    tokens/s (median of ``repeats``, after a warm-up)."""
    import torch

    from ..engine.score import score_ids

    ids = torch.randint(0, cfg.vocab_size, (n_score,), generator=torch.Generator().manual_seed(0)).tolist()
    score_ids(model, ids[: min(300, n_score)], 1)
    sync(dev)
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        score_ids(model, ids, 1)
        sync(dev)
        times.append(time.perf_counter() - t)
    return (n_score - 1) / median(times)


def bench_gpu(repeats: int, quick: bool, device: str | None = None, config=None, n_gen: int | None = None,
              n_score: int | None = None) -> Result:
    """Generation and scoring of a Llama-3.1-8B-shaped model in bf16 on CUDA, against the rooflines.

    ``device``/``config`` exist for smoke tests on CPU with a tiny config; without CUDA (and no
    ``device``) the target reports that nothing was measured.
    """
    import torch

    if device is None and not torch.cuda.is_available():
        return Result("gpu", "no CUDA device here", math.nan, math.nan, "", math.nan, "-", None,
                      notes=["no GPU in this process: the GPU figures were not measured"])
    from transformers import AutoModelForCausalLM

    from ..core.sampling import Sampling

    dev = torch.device(device or "cuda")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    cfg = config or llama_8b_config(4 if quick else None)
    t = time.perf_counter()
    with dev:
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.eval()
    build_s = time.perf_counter() - t
    tok = IdTokenizer(cfg.vocab_size, cfg.eos_token_id)
    weight_bytes = param_bytes(model)
    bandwidth, peak_flops = device_rates(dev, dtype)
    sampling = Sampling(temperature=1.0, top_p=0.95)
    n = n_gen or (32 if quick else 128)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * torch.finfo(dtype).bits // 8
    width = len(tok(PROMPT)["input_ids"])
    details, gen = {}, {}
    for batch in (1, 32):
        rate = generate_rate(model, tok, dev, sampling, batch, n, repeats)
        plain = plain_loop_rate(model, dev, batch, width, n)
        step_bytes = weight_bytes + batch * kv_per_token * (width + n / 2)
        roof = batch / (step_bytes / bandwidth)
        gen[batch] = (rate, roof, plain)
        details[f"generate batch {batch} x {n} tok: ours, plain loop, bandwidth roofline (tok/s)"] = [
            round(rate, 1), round(plain, 1), round(roof, 1)]
        details[f"generate batch {batch}: ours / roofline, plain / roofline"] = [round(rate / roof, 3),
                                                                                round(plain / roof, 3)]
    details["per-step cost at batch 32 outside the model (ms)"] = step_costs(cfg, dev, sampling)
    n_score = n_score or (1024 if quick else 4096)
    score_tok_s = score_rate(model, cfg, dev, n_score, repeats)
    w, att = flops_per_token(model, n_score)
    score_roof = peak_flops / (w + att)
    details |= {
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else str(dev),
        "model": f"Llama-3.1-8B-shaped, {cfg.num_hidden_layers} layers, random {str(dtype)[6:]} weights "
                 f"({weight_bytes / GIB:.2f} GiB), built in {build_s:.0f} s",
        "copy bandwidth (GB/s, read + write), matmul (TFLOP/s)": [round(bandwidth / 1e9), round(peak_flops / 1e12, 1)],
        f"score_ids {n_score} tok: tok/s, compute roofline tok/s, fraction": [
            round(score_tok_s), round(score_roof), round(score_tok_s / score_roof, 3)],
    }
    if dev.type == "cuda":
        details["peak GPU memory (GiB)"] = round(torch.cuda.max_memory_allocated() / GIB, 1)
    r32, roof32, _ = gen[32]
    return Result("gpu", "tok/s, generate b32 vs BW roofline", r32, roof32, "tok/s", r32 / roof32,
                  "(reported)", None, details=details,
                  notes=["roofline of a generation step = (weights + KV cache bytes read) / copy bandwidth"])
