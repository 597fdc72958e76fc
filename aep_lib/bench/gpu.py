"""``gpu``: the one prepared GPU check, only where CUDA is present (``aep bench --target gpu``).

In one run, on one GPU: a Llama-3.1-8B-shaped model with random bf16 weights generates with the ``eager``,
``static`` and ``compiled`` engines at batch 1 and 32 (the same seeds: the tokens must be equal across
engines, the statistics within ``STAT_TOLERANCE_BITS``), each beside the memory-bandwidth roofline measured
in the same process; scoring is measured against the bf16 compute roofline; then the ``paper-smoke`` profile
(every paper notebook on the stand-ins, ``aep figures --profile paper-smoke``) runs on the GPU. One table
(``gpu_table``). Goals: at least ``GOALS`` of the rooflines (the statistics included), engines that agree,
every notebook ok. Sized to finish in under 8 minutes on one H100 (``bench_gpu`` defaults).
Without CUDA it measures nothing: ``refusal()`` is the one line to print.
"""

from __future__ import annotations

import math
import time

from ..engine.models import cache_kwargs, new_cache
from .common import GIB, MIB, Result, flops_per_token, fmt, median, param_bytes

PROMPT = "The history of the lighthouse begins"
ENGINES = ("eager", "static", "compiled")
BATCHES = (1, 32)
STAT_TOLERANCE_BITS = 1e-2  # statistics of one seed across engines (bf16 weights, float32 logits)
STAT_COLUMNS = ("surprisal_raw", "entropy_raw", "varentropy_raw", "surprisal_samp", "entropy_samp")
GOALS = {"generate b32 / BW roofline": 0.5, "generate b1 / BW roofline": 0.4, "score / compute roofline": 0.5}


def refusal() -> str | None:
    """The one line ``aep bench --target gpu`` prints instead of measuring where torch sees no CUDA device
    (None where it does)."""
    import torch

    if torch.cuda.is_available():
        return None
    return ("aep bench --target gpu needs a CUDA GPU and torch sees none here: nothing was measured (run it on a "
            "GPU machine: about 8 minutes on one H100)")


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


def generate_rate(model, tok, dev, sampling, batch: int, n: int, repeats: int, engine: str = "auto"):
    """Our ``generate`` (``engine``) at ``batch`` × ``n`` tokens: ``(tokens/s, generations of seeds 0..batch-1)``
    (the rate a median of ``repeats``, after a warm-up at the same shape: a compiled step compiles there)."""
    from ..engine.generate import generate

    generate(model, tok, [PROMPT] * batch, list(range(batch)), sampling, n, progress=False, engine=engine)
    sync(dev)
    times, first = [], None
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        out = generate(model, tok, [PROMPT] * batch, list(range(batch)), sampling, n, progress=False, engine=engine)
        sync(dev)
        times.append(time.perf_counter() - t)
        first = first or out
    return batch * n / median(times), first


def engine_agreement(reference, other) -> tuple[bool, float]:
    """``(every token equal, largest |difference| of the statistics in bits)`` between two engines' generations
    of the same prompts and seeds (``STAT_COLUMNS``; over the positions where both have the same tokens)."""
    import numpy as np

    equal, worst = True, 0.0
    for a, b in zip(reference, other):
        equal &= list(a.token_ids) == list(b.token_ids)
        n = min(len(a.tokens), len(b.tokens))
        for col in STAT_COLUMNS:
            x = a.tokens[col].to_numpy(float)[:n]
            y = b.tokens[col].to_numpy(float)[:n]
            finite = np.isfinite(x) & np.isfinite(y)
            if (np.isfinite(x) != np.isfinite(y)).any():
                return False, math.inf
            if finite.any():
                worst = max(worst, float(np.abs(x[finite] - y[finite]).max()))
    return bool(equal and len(reference) == len(other)), worst


def engine_rows(model, tok, dev, sampling, n: int, repeats: int, roofline, engines=ENGINES,
                batches=BATCHES) -> list[dict]:
    """One row per engine and batch: tok/s, the bandwidth roofline (``roofline(batch)``, tok/s) and the
    fraction, and whether the engine agrees with ``eager`` at that batch (tokens, largest statistic gap)."""
    rows = []
    for batch in batches:
        reference = None
        for engine in engines:
            t = time.perf_counter()
            rate, gens = generate_rate(model, tok, dev, sampling, batch, n, repeats, engine)
            roof = roofline(batch)
            reference = reference or gens
            same, gap = engine_agreement(reference, gens)
            rows.append({"what": f"generate {engine} b{batch}", "engine": engine, "batch": batch, "rate": rate,
                         "roofline": roof, "fraction": rate / roof, "tokens_equal": same, "stat_gap": gap,
                         "seconds": time.perf_counter() - t})
    return rows


def gpu_table(rows: list[dict]) -> str:
    """The check's one table: a row per measurement (rate, roofline, fraction, agreement, seconds)."""
    head = f"{'measure':<34} {'tok/s':>10} {'roofline':>10} {'fraction':>8}  {'tokens = eager':<14} {'max |dstat| bits':>16} {'s':>5}"
    lines = [head, "-" * len(head)]
    for r in rows:
        same = {True: "yes", False: "NO", None: "-"}[r.get("tokens_equal")]
        gap = r.get("stat_gap")
        lines.append(f"{r['what']:<34} {fmt(r.get('rate')):>10} {fmt(r.get('roofline')):>10} "
                     f"{fmt(r.get('fraction')):>8}  {same:<14} {'-' if gap is None else f'{gap:.2g}':>16} "
                     f"{r.get('seconds', math.nan):>5.0f}")
    return "\n".join(lines)


def smoke_row(output_root, only=None, timeout_s: float = 600) -> dict:
    """``aep figures --profile paper-smoke`` into ``output_root``, in a fresh process (the report layer is not
    this one's to import): a row with the notebooks ok of all, the failed ones and the seconds."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "aep_lib.report.pipeline", "--profile", "paper-smoke", "--output-root",
           str(output_root)] + [f"--only={o}" for o in only or []]
    t = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        out = done.stdout
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        out += f"\ntimed out after {timeout_s:.0f} s"
    return smoke_summary(out, time.perf_counter() - t)


def smoke_summary(stdout: str, seconds: float) -> dict:
    """The row of a paper-smoke run from what ``python -m aep_lib.report.pipeline`` printed (its closing lines:
    ``N ok, M failed ...`` and a ``FAILED name ...`` line per failure)."""
    import re

    counts = re.search(r"^(\d+) ok, (\d+) failed", stdout, re.MULTILINE)
    failed = [line.split()[1] for line in stdout.splitlines() if line.startswith("FAILED ")]
    if counts is None:
        tail = " ".join(stdout.strip().splitlines()[-1:]) or "no output"
        return {"what": "paper-smoke: did not finish", "fraction": 0.0, "seconds": seconds,
                "failed": failed or [f"(the run: {tail})"]}
    ok, bad = int(counts.group(1)), int(counts.group(2))
    return {"what": f"paper-smoke: {ok} of {ok + bad} notebooks ok", "fraction": ok / max(1, ok + bad),
            "seconds": seconds, "failed": failed or (["(unnamed)"] if bad else [])}


def verdict(rows: list[dict]) -> tuple[bool, list[str]]:
    """Whether the check holds (``GOALS`` for the best engine per batch and for scoring, every engine agreeing
    with eager, every paper-smoke notebook ok) and why not."""
    why = []
    for batch in BATCHES:
        gen = [r for r in rows if r.get("batch") == batch]
        best = max((r["fraction"] for r in gen), default=math.nan)
        goal = GOALS[f"generate b{batch} / BW roofline"]
        if not best >= goal:
            why.append(f"generate b{batch}: best engine at {fmt(best)} of the bandwidth roofline (goal {goal})")
    for r in rows:
        if r.get("tokens_equal") is False or (r.get("stat_gap") or 0) > STAT_TOLERANCE_BITS:
            why.append(f"{r['what']}: differs from eager (tokens equal {r['tokens_equal']}, gap {r['stat_gap']:.2g} bits)")
        if r["what"].startswith("score") and not r["fraction"] >= GOALS["score / compute roofline"]:
            why.append(f"scoring at {fmt(r['fraction'])} of the compute roofline")
        if r["what"].startswith("paper-smoke") and r["failed"]:
            why.append(f"paper-smoke failed: {', '.join(r['failed'])}")
    return not why, why


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
              n_score: int | None = None, engines=None, smoke: bool | None = None, smoke_only=None) -> Result:
    """The GPU check (module docstring): engines × batches against the bandwidth roofline, scoring against the
    compute roofline, the paper-smoke profile; ``details["table"]`` is its one table.

    ``device``/``config``/``engines``/``smoke`` exist for tests on CPU with a tiny config (``engines`` defaults
    to ``ENGINES`` on CUDA, to eager and static elsewhere: compiling on a CPU costs minutes); without CUDA (and
    no ``device``) the target reports that nothing was measured (``refusal``). ``repeats`` is capped at 2 (the
    check must fit in 8 minutes); ``quick``: 4 layers, shorter runs, no paper-smoke.
    """
    import tempfile

    import torch

    if device is None and refusal() is not None:
        return Result("gpu", "no CUDA device here", math.nan, math.nan, "", math.nan, "-", None,
                      notes=["no GPU in this process: the GPU figures were not measured"])
    from transformers import AutoModelForCausalLM

    from ..core.sampling import Sampling

    dev = torch.device(device or "cuda")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    cfg = config or llama_8b_config(4 if quick else None)
    repeats = min(repeats, 2)
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

    def roofline(batch: int) -> float:  # tok/s if a step cost only reading the weights and the KV cache once
        return batch / ((weight_bytes + batch * kv_per_token * (width + n / 2)) / bandwidth)

    engines = engines or (ENGINES if dev.type == "cuda" else ("eager", "static"))
    rows = engine_rows(model, tok, dev, sampling, n, repeats, roofline, engines)
    for batch in BATCHES:
        t = time.perf_counter()
        plain = plain_loop_rate(model, dev, batch, width, n)
        rows.append({"what": f"plain loop b{batch} (no statistics)", "rate": plain, "roofline": roofline(batch),
                     "fraction": plain / roofline(batch), "seconds": time.perf_counter() - t})
    n_score = n_score or (1024 if quick else 4096)
    t = time.perf_counter()
    score_tok_s = score_rate(model, cfg, dev, n_score, repeats)
    w, att = flops_per_token(model, n_score)
    score_roof = peak_flops / (w + att)
    rows.append({"what": f"score_ids {n_score} tok (compute roofline)", "rate": score_tok_s, "roofline": score_roof,
                 "fraction": score_tok_s / score_roof, "seconds": time.perf_counter() - t})
    del model
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    if smoke if smoke is not None else not quick:
        with tempfile.TemporaryDirectory(prefix="aep-gpu-smoke-") as out:
            rows.append(smoke_row(out, smoke_only))
    holds, why = verdict(rows)
    details = {
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else str(dev),
        "model": f"Llama-3.1-8B-shaped, {cfg.num_hidden_layers} layers, random {str(dtype)[6:]} weights "
                 f"({weight_bytes / GIB:.2f} GiB), built in {build_s:.0f} s",
        "copy bandwidth (GB/s, read + write), matmul (TFLOP/s)": [round(bandwidth / 1e9), round(peak_flops / 1e12, 1)],
        "per-step cost at batch 32 outside the model (ms)": step_costs(cfg, dev, sampling),
        "table": "\n" + gpu_table(rows),
    }
    for batch in BATCHES:  # the best engine per batch, as the target has always reported it
        best = max((r for r in rows if r.get("batch") == batch), key=lambda r: r["fraction"])
        details[f"generate batch {batch} x {n} tok: best engine ({best['engine']}), bandwidth roofline (tok/s)"] = [
            round(best["rate"], 1), round(best["roofline"], 1)]
    score = next(r for r in rows if r["what"].startswith("score_ids"))
    details[f"score_ids {n_score} tok: tok/s, compute roofline tok/s, fraction"] = [
        round(score["rate"]), round(score["roofline"]), round(score["fraction"], 3)]
    if dev.type == "cuda":
        details["peak GPU memory (GiB)"] = round(torch.cuda.max_memory_allocated() / GIB, 1)
    b32 = max((r for r in rows if r.get("batch") == 32), key=lambda r: r["fraction"])
    notes = [("roofline of a generation step = (weights + KV cache bytes read) / copy bandwidth; of scoring = "
              "FLOP per token / matmul FLOP/s"), *why]
    return Result("gpu", f"tok/s, generate b32 ({b32['engine']}) vs BW", b32["rate"], b32["roofline"], "tok/s",
                  b32["fraction"], "see GOALS", holds if dev.type == "cuda" else None, details=details, notes=notes)
