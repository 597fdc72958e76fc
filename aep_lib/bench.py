"""Benchmarks of issue 7: each target measured against its baseline in the same run (``aep bench``).

Targets (2 CPU cores, float32 unless said):

- ``generation``: our ``generate`` at batch 16 (16 × 512 tokens, SmolLM2, temperature 1, top-p 0.95),
  aggregate tokens/s, against transformers' ``generate(..., output_scores=True, output_logits=True)``
  one sequence at a time with the statistics computed afterwards from its scores and logits. Goal ≥ 5×.
- ``memory``: Gemma (262k vocabulary), 1 sequence × 2,048 tokens, peak resident memory of ours and of
  that baseline, each in a fresh process. Goal ≥ 2× lower; ours grows with length by the KV cache only.
- ``scoring``: a 4,096-token text under Gemma: tokens/s as a fraction of the compute roofline
  (float32 matmul FLOP/s measured in the same process / FLOP per token) and peak memory. Goals ≥ 50%
  and ≤ model + 1 GB.
- ``pair``: the joint pass of two models on one vocabulary (SmolLM2 and a perturbed copy) against one
  model's scoring pass. Goal ≤ 2.2×.
- ``startup``: a fresh ``python -c "import aep_lib.models; load_model(<cached embedded>)"``, from launch
  until the model is loaded (the exit reported beside it). Goal < 5 s.
- ``store``: 10 million synthetic token rows written in the store's layout (10,000 runs × 1,000
  tokens); the per-run summary query in DuckDB (``store.connect()`` included), against the same rows
  compacted into one file. Goal: at most 2× (thousands of run files cost no more than that).
- ``gpu``: only where CUDA is present: a Llama-3.1-8B-shaped model with random bf16 weights;
  generation at batch 1 and 32 against the memory-bandwidth roofline, scoring against the bf16
  compute roofline.

Timings on a shared machine are noisy: ours and the baseline are interleaved within each repeat and
medians are reported. ``--quick`` runs tiny sizes, and SmolLM2 where the target names Gemma (a smoke
test of the benchmark code, not a measurement).
"""

from __future__ import annotations

import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TARGETS = ("generation", "memory", "scoring", "pair", "startup", "store", "gpu")
GIB = 2**30
MIB = 2**20


@dataclass
class Result:
    """One target: ``ours`` and ``baseline`` in ``unit``, their ratio, the goal and whether it holds."""

    target: str
    measure: str
    ours: float
    baseline: float
    unit: str
    ratio: float
    goal: str
    holds: bool | None
    details: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        holds = {True: "yes", False: "NO", None: "n/a"}[self.holds]
        return (f"{self.target:<11} {self.measure:<34} {_fmt(self.ours):>10} {_fmt(self.baseline):>10} "
                f"{self.unit:<6} {_fmt(self.ratio):>7}x  {self.goal:<16} {holds}")


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:,.0f}"


def _median(xs) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- memory of this process ----------------------------------------------------------------------------


def rss() -> int:
    """Current resident memory of this process, bytes."""
    import psutil

    return psutil.Process().memory_info().rss


class PeakRSS:
    """Peak resident memory of this process over a ``with`` block, bytes (``.peak``).

    Resets the kernel's high-water mark (``/proc/self/clear_refs``, Linux) and reads ``VmHWM``; where
    that is not possible, samples the RSS every 2 ms in a thread.
    """

    def __enter__(self):
        self._thread = None
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._hwm = True
        except OSError:
            self._hwm, self._stop, self.peak = False, threading.Event(), rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc):
        if self._hwm:
            with open("/proc/self/status") as f:
                self.peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, rss())
        return False


def ru_maxrss() -> int:
    """Peak resident memory of this process's whole life, bytes (getrusage)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- (a) generation with statistics ----------------------------------------------------------------------


def hf_generate_with_stats(model, tokenizer, prompt: str, sampling, n: int, seed: int = 0, block: int = 64):
    """The baseline: ``model.generate`` with scores and logits kept, statistics computed afterwards.

    transformers keeps one ``[1, vocab]`` float32 tensor per step in ``scores`` (the warped ``q``
    logits) and another in ``logits`` (raw ``p``); the statistics are computed from them in blocks of
    ``block`` steps (``aep_lib.stats.token_stats``), as a careful user would. Returns a DataFrame.
    """
    import pandas as pd
    import torch
    from transformers import GenerationConfig

    from .sampling import eos_ids
    from .stats import token_stats

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

    from .generate import generate
    from .params import Sampling, load_prompts
    from .runs import cached_model

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
        _say(f"  generation repeat {r + 1}/{repeats}: ours b{batch} {ours[-1]:.1f} tok/s, ours b1 {ours_b1[-1]:.1f}, "
             f"baseline {base[-1]:.1f}")
    o, b = _median(ours), _median(base)
    return Result(
        "generation", f"tok/s, ours b{batch} vs HF 1-by-1", o, b, "tok/s", o / b, ">= 5x", o / b >= 5,
        details={f"ours batch {batch} x {n} tok (tok/s, each repeat)": [round(x, 1) for x in ours],
                 f"ours batch 1 x {n_b1} tok (tok/s)": [round(x, 1) for x in ours_b1],
                 f"baseline {n_base} x {n} tok one at a time (tok/s)": [round(x, 1) for x in base],
                 "ours batch 1 / baseline": round(_median(ours_b1) / b, 2),
                 "torch threads": torch.get_num_threads()},
        notes=[f"baseline measured on {n_base} sequences x {n} tokens and quoted as tokens/s (it runs one "
               "sequence at a time, so its rate does not depend on how many)"],
    )


# --- (b) memory of generation, each measured in a fresh process -----------------------------------------


def _memory_child(which: str, model_name: str, n: int) -> dict:
    from .generate import generate, kv_cache_bytes
    from .params import Sampling, load_prompts
    from .runs import cached_model

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
            "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
            "vocab": int(model.config.vocab_size)}


def _run_child(*args: str, timeout: float = 3600, env: dict | None = None) -> dict:
    """``python -m aep_lib.bench --child ARGS`` in a fresh process; its JSON answer (last line)."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "aep_lib.bench", "--child", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"bench child {args} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_memory(repeats: int, quick: bool) -> Result:
    model = "smollm2-135m" if quick else "gemma-3-270m"  # quick: the smaller model, a smoke test
    n_long, n_short = (64, 16) if quick else (2048, 512)
    base = _run_child("memory", "baseline", model, str(n_long))
    ours = _run_child("memory", "ours", model, str(n_long))
    short = _run_child("memory", "ours", model, str(n_short))
    # Without the periodic malloc_trim of generate (models.release_free_memory), both sides measured
    # again: glibc keeps the pages the per-step blocks free and the heap grows every step.
    untuned = {"AEP_TRIM_EVERY": "0"}
    untuned_ours = _run_child("memory", "ours", model, str(n_long), env=untuned)
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


# --- (c) scoring against the compute roofline -------------------------------------------------------------


def matmul_flops(size: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matrix-multiply rate, FLOP/s (median of ``repeats`` ``size``³ products)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2 * size**3 / _median(times)


def flops_per_token(model, n_tokens: int) -> tuple[float, float]:
    """``(weights, attention)`` FLOP per token of a causal pass over ``n_tokens`` (mean over positions).

    Weights: 2 × the parameters of every matrix (the tied output projection counted once, as the
    embedding lookup costs nothing). Attention: 2 × 2 × heads × head_dim × context per layer
    (QKᵀ and AV), the context capped at the window on sliding-window layers.
    """
    c = model.config
    weights = 2 * sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    types = getattr(c, "layer_types", None) or ["full_attention"] * c.num_hidden_layers
    window = getattr(c, "sliding_window", None) or n_tokens
    ctx = 0.0
    for t in types:
        w = window if t == "sliding_attention" else n_tokens
        ctx += sum(min(i + 1, w) for i in range(n_tokens)) / n_tokens
    return float(weights), 4.0 * c.num_attention_heads * head_dim * ctx


def _scoring_child(model_name: str, n: int, repeats: int) -> dict:
    import torch

    from .runs import cached_model
    from .score import score_ids

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
    # where the time goes: the forward pass alone (logits of every position, no statistics)
    fwd = []
    from .generate import cache_kwargs, new_cache

    with torch.no_grad():
        for _ in range(max(1, repeats // 2)):
            t = time.perf_counter()
            cache = new_cache(model)
            for s in range(0, n - 1, 256):
                chunk = torch.tensor(ids[s : min(s + 256, n - 1)]).unsqueeze(0)
                pos = torch.arange(s, s + chunk.shape[1]).unsqueeze(0)
                model(input_ids=chunk, position_ids=pos, use_cache=True, **cache_kwargs(model, cache))
            fwd.append(time.perf_counter() - t)
    return {"times": times, "flops": rates, "w": w, "a": a, "after_load": after_load, "peak": peak.peak,
            "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()), "forward": fwd, "n": n}


def bench_scoring(repeats: int, quick: bool) -> Result:
    n, model = (512, "smollm2-135m") if quick else (4096, "gemma-3-270m")  # quick: a smoke test
    c = _run_child("scoring", model, str(n), str(repeats))
    scored = n - 1
    tok_s = scored / _median(c["times"])
    flop_tok = c["w"] + c["a"]
    rate = _median(c["flops"])
    roofline = rate / flop_tok
    frac = tok_s / roofline
    extra = c["peak"] - c["after_load"]
    fwd_s = scored / _median(c["forward"])
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


# --- (d) the joint pair pass -------------------------------------------------------------------------------


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

    from .runs import cached_model
    from .score import score_ids

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
        _say(f"  pair repeat {r + 1}/{repeats}: one model {single[-1]:.2f} s, pair {pair[-1]:.2f} s")
    s, p = _median(single), _median(pair)
    del other
    gc.collect()
    return Result(
        "pair", f"s, {model_name} {n} tok: pair vs one", p, s, "s", p / s, "<= 2.2x", p / s <= 2.2,
        details={"one model (s, each repeat)": [round(x, 2) for x in single],
                 "joint pair pass (s, each repeat)": [round(x, 2) for x in pair]},
        notes=["second model: a copy of the first with Gaussian noise (5% of each matrix's std) on every matrix"],
    )


# --- (e) start-up ------------------------------------------------------------------------------------------


def bench_startup(repeats: int, quick: bool) -> Result:
    """Fresh processes: from launch until ``load_model`` returns (the goal), and until the process exits.

    The child prints the system-wide monotonic clock when the model is ready; the parent subtracts
    the clock it read just before launching. The exit (the interpreter tearing down torch and
    freeing the tokenizer, ~1 s) is reported beside it but is not start-up.
    """
    from .models import EMBEDDED_MODELS, embedded_cache

    for name in EMBEDDED_MODELS:
        embedded_cache(name)  # make sure the caches exist (and are up to date): the goal is a cached model
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    clock = "time.clock_gettime(time.CLOCK_MONOTONIC)" if hasattr(time, "CLOCK_MONOTONIC") else None
    now = (lambda: time.clock_gettime(time.CLOCK_MONOTONIC)) if clock else time.perf_counter

    import resource

    cpu_times: dict[str, list[float]] = {}
    exits: dict[str, list[float]] = {}

    def launch(label: str, code: str) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        script = f"import time\n{code}\n" + (f"print('READY', {clock}, flush=True)\n" if clock else "")
        t0 = now()
        done = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, env=env)
        t1 = now()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_times.setdefault(label, []).append(round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2))
        exits.setdefault(label, []).append(round(t1 - t0, 2))
        ready = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("READY ")]
        return float(ready[-1]) - t0 if ready else t1 - t0  # no shared clock: the whole process

    load = "from aep_lib.models import load_model; load_model({!r}, device='cpu')"
    floor = "import torch, transformers; from transformers import AutoModelForCausalLM"
    ready: dict[str, list[float]] = {"smollm2-135m": [], "gemma-3-270m": [], "floor": []}
    for _ in range(repeats):
        for label in ready:
            ready[label].append(launch(label, floor if label == "floor" else load.format(label)))
    worst = max(_median(ready["smollm2-135m"]), _median(ready["gemma-3-270m"]))
    return Result(
        "startup", "s, launch -> cached model loaded", worst, 5.0, "s", worst / 5.0, "< 5 s", worst < 5.0,
        details={**{f"{label} ready (s, each repeat)": [round(x, 2) for x in v] for label, v in ready.items()},
                 **{f"{label} process exit (s, each repeat)": v for label, v in exits.items()},
                 "CPU seconds (user + sys) of each process": cpu_times,
                 "floor": "python -c 'import torch, transformers; from transformers import AutoModelForCausalLM'"},
        notes=["ours = the slower of the two models (median, launch until load_model returns); "
               "'baseline' column = the 5 s goal; 'process exit' adds the interpreter's teardown; "
               "wall time on a loaded machine: see the load average and the CPU seconds"],
    )


# --- (f) the store at scale ------------------------------------------------------------------------------


SUMMARY_SQL = """
SELECT run_id, count(*) AS n, avg(surprisal_raw) AS l, avg(entropy_raw) AS h,
       avg(surprisal_raw) - avg(entropy_raw) AS D, sqrt(sum(varentropy_raw)) / count(*) AS sigma,
       avg(surprisal_samp) AS l_samp, avg(entropy_samp) AS h_samp
FROM tokens GROUP BY run_id
"""


def synthetic_tokens(n: int, seed: int = 0):
    """A ``[n]``-row token table with the columns (and dtypes) ``generate`` stores."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    ent = rng.gamma(2.0, 1.5, n)
    return pa.table({
        "position": np.arange(n, dtype=np.int64), "token_id": rng.integers(0, 49152, n),
        "token_text": pa.array(rng.choice(np.array([" the", " of", "ing", " and", ".", " a", "ed"]), n)),
        "ctx_len": np.arange(n, dtype=np.int64) + 12,
        "surprisal_raw": ent + rng.normal(0, 1.5, n), "entropy_raw": ent, "varentropy_raw": rng.gamma(2.0, 2.0, n),
        "rank_raw": rng.integers(1, 50, n), "greedy_id": rng.integers(0, 49152, n),
        "surprisal_samp": ent + rng.normal(0, 1.4, n), "entropy_samp": ent * 0.9, "varentropy_samp": rng.gamma(2.0, 1.8, n),
    })  # fmt: skip


def bench_store(repeats: int, quick: bool, workdir: str | None = None) -> Result:
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .store import RunStore

    n_runs, per_run = (200, 500) if quick else (10_000, 1_000)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="aep-bench-store-") as tmp:
        store = RunStore(Path(tmp) / "store")
        base = synthetic_tokens(per_run)
        models, prompts = ["llama-8b", "llama-70b", "gemma-1b", "gemma-12b"], [f"p{i:03d}" for i in range(25)]
        t = time.perf_counter()
        t_mark, marks = t, []
        for i in range(n_runs):
            run_id = f"{i:016x}"
            store.write_run({"run_id": run_id, "kind": "generate", "model": models[i % 4],
                             "prompt_id": prompts[(i // 4) % 25], "label": f"s{i // 100}", "status": "ok",
                             "seed": i}, base)
            if (i + 1) % max(1, n_runs // 5) == 0:
                now = time.perf_counter()
                marks.append(round((now - t_mark) / max(1, n_runs // 5) * 1000, 2))
                t_mark = now
        write_s = time.perf_counter() - t
        files = list(store.root.rglob("tokens.parquet"))
        tok_bytes = sum(f.stat().st_size for f in files)
        run_bytes = sum(f.stat().st_size for f in store.root.rglob("run.parquet"))
        meta = pq.read_metadata(files[0])

        t = time.perf_counter()
        con = store.connect()
        connect_cold = time.perf_counter() - t
        ours, direct, compacted = [], [], []
        glob = str(store.root / "*" / "*" / "*" / "*" / "tokens.parquet")
        # the comparison: every token row in one file, zstd, row groups of 1M rows
        one = Path(tmp) / "compacted.parquet"
        t = time.perf_counter()
        writer = None
        for f in files:
            table = pq.read_table(f)
            writer = writer or pq.ParquetWriter(one, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=1_000_000)
        writer.close()
        compact_s = time.perf_counter() - t
        raw = duckdb.connect()
        n_rows = raw.execute(f"SELECT count(*) FROM read_parquet('{one}')").fetchall()[0][0]
        connects, queries = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            con = store.connect()
            t1 = time.perf_counter()
            out = con.sql(SUMMARY_SQL).to_arrow_table()
            ours.append(time.perf_counter() - t)
            connects.append(t1 - t)
            queries.append(time.perf_counter() - t1)
            t = time.perf_counter()
            raw.sql(SUMMARY_SQL.replace("FROM tokens", f"FROM read_parquet('{glob}')")).to_arrow_table()
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            raw.sql(SUMMARY_SQL.replace("FROM tokens", f"FROM read_parquet('{one}')")).to_arrow_table()
            compacted.append(time.perf_counter() - t)
        assert out.num_rows == n_runs and n_rows == n_runs * per_run
        o, c = _median(ours), _median(compacted)
        return Result(
            "store", f"s, summary of {n_runs * per_run / 1e6:g}M rows", o, c, "s", o / c, "<= 2x one file",
            o / c <= 2.0,
            details={
                "layout": f"{n_runs} run folders <kind>/<model>/<prompt_id>/<label>__<run_id>/, one tokens.parquet "
                          f"(zstd, {meta.num_row_groups} row group of {meta.row_group(0).num_rows} rows) + one "
                          f"run.parquet each",
                "write (s total, ms per run over each fifth of the runs)": [round(write_s, 1), marks],
                "bytes per token row (tokens files)": round(tok_bytes / (n_runs * per_run), 1),
                "store size (MiB): tokens, run rows": [round(tok_bytes / MIB, 1), round(run_bytes / MIB, 1)],
                "store.connect(): first, then each repeat (s)": [round(connect_cold, 2)] + [round(x, 2) for x in connects],
                "query on the connection (s, each repeat)": [round(x, 2) for x in queries],
                "connect + query (s, each repeat)": [round(x, 2) for x in ours],
                "query via read_parquet(glob) over the run files (s)": [round(x, 2) for x in direct],
                "query over one compacted file (s)": [round(x, 2) for x in compacted],
                "compaction into one file (s)": round(compact_s, 1),
            },
            notes=["baseline column = the same rows compacted into one Parquet file (1M-row row groups); "
                   "ours = store.connect() + the query"],
        )


# --- GPU (where CUDA is present) ----------------------------------------------------------------------------


class _IdTokenizer:
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


def _device_rates(dev, dtype) -> tuple[float, float]:
    """``(copy bandwidth B/s counting read + write, matmul FLOP/s)`` of ``dev`` in ``dtype``."""
    import torch

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    n, size = (GIB // 2, 8192) if dev.type == "cuda" else (16 * MIB, 512)
    x = torch.empty(n, dtype=dtype, device=dev)
    y = torch.empty_like(x)
    y.copy_(x)
    sync()
    t = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    sync()
    bandwidth = 2 * x.numel() * x.element_size() * 10 / (time.perf_counter() - t)
    del x, y
    a = torch.randn(size, size, device=dev, dtype=dtype)
    a @ a
    sync()
    t = time.perf_counter()
    for _ in range(10):
        a @ a
    sync()
    return bandwidth, 2 * size**3 * 10 / (time.perf_counter() - t)


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

    from .generate import cache_kwargs, generate, new_cache
    from .params import Sampling
    from .score import score_ids

    dev = torch.device(device or "cuda")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    cfg = config or llama_8b_config(4 if quick else None)
    t = time.perf_counter()
    with dev:
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.eval()
    build_s = time.perf_counter() - t
    tok = _IdTokenizer(cfg.vocab_size, cfg.eos_token_id)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bandwidth, peak_flops = _device_rates(dev, dtype)
    sampling = Sampling(temperature=1.0, top_p=0.95)
    n = n_gen or (32 if quick else 128)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * torch.finfo(dtype).bits // 8
    details, gen = {}, {}
    prompt = "The history of the lighthouse begins"
    for batch in (1, 32):
        generate(model, tok, ["warm up"] * batch, list(range(batch)), sampling, 4, progress=False)
        sync()
        times = []
        for r in range(max(1, repeats)):
            t = time.perf_counter()
            generate(model, tok, [prompt] * batch, list(range(r, r + batch)), sampling, n, progress=False)
            sync()
            times.append(time.perf_counter() - t)
        rate = batch * n / _median(times)
        # the model alone: a plain KV-cache loop, greedy argmax, no statistics
        width = len(tok(prompt)["input_ids"])
        ids = torch.full((batch, width), 5, device=dev)
        with torch.no_grad():
            cache = new_cache(model)
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **cache_kwargs(model, cache))
            sync()
            t = time.perf_counter()
            for step in range(n):
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                out = model(input_ids=nxt, position_ids=torch.full((batch, 1), width + step, device=dev),
                            use_cache=True, **cache_kwargs(model, cache))
            sync()
            plain = batch * n / (time.perf_counter() - t)
        step_bytes = weight_bytes + batch * kv_per_token * (width + n / 2)
        roof = batch / (step_bytes / bandwidth)
        gen[batch] = (rate, roof, plain)
        details[f"generate batch {batch} x {n} tok: ours, plain loop, bandwidth roofline (tok/s)"] = [
            round(rate, 1), round(plain, 1), round(roof, 1)]
        details[f"generate batch {batch}: ours / roofline, plain / roofline"] = [round(rate / roof, 3),
                                                                                round(plain / roof, 3)]
    # where a generation step's time goes outside the model: warps, sampling noise, statistics
    from .sampling import SamplingWarp, sample
    from .stats import token_stats

    logits = torch.randn(32, cfg.vocab_size, device=dev)
    warp = SamplingWarp(sampling, [cfg.eos_token_id])
    parts = {}
    for name, fn in [("warp (top-p)", lambda: warp(logits)),
                     ("sample (Gumbel noise, made on the device)", lambda: sample(logits, list(range(32)), 3)),
                     ("statistics p and q (float64)", lambda: (token_stats(logits, logits.argmax(-1)),
                                                               token_stats(logits, logits.argmax(-1), False)))]:
        fn()
        sync()
        t = time.perf_counter()
        for _ in range(5):
            fn()
        sync()
        parts[name] = round((time.perf_counter() - t) / 5 * 1000, 2)
    details["per-step cost at batch 32 outside the model (ms)"] = parts
    # scoring: bf16 weights, float32 logits, float64 statistics
    n_score = n_score or (1024 if quick else 4096)
    ids = torch.randint(0, cfg.vocab_size, (n_score,), generator=torch.Generator().manual_seed(0)).tolist()
    score_ids(model, ids[: min(300, n_score)], 1)
    sync()
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        score_ids(model, ids, 1)
        sync()
        times.append(time.perf_counter() - t)
    w, att = flops_per_token(model, n_score)
    score_rate = (n_score - 1) / _median(times)
    score_roof = peak_flops / (w + att)
    details |= {
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else str(dev),
        "model": f"Llama-3.1-8B-shaped, {cfg.num_hidden_layers} layers, random {str(dtype)[6:]} weights "
                 f"({weight_bytes / GIB:.2f} GiB), built in {build_s:.0f} s",
        "copy bandwidth (GB/s, read + write), matmul (TFLOP/s)": [round(bandwidth / 1e9), round(peak_flops / 1e12, 1)],
        f"score_ids {n_score} tok: tok/s, compute roofline tok/s, fraction": [
            round(score_rate), round(score_roof), round(score_rate / score_roof, 3)],
    }
    if dev.type == "cuda":
        details["peak GPU memory (GiB)"] = round(torch.cuda.max_memory_allocated() / GIB, 1)
    r32, roof32, _ = gen[32]
    return Result("gpu", "tok/s, generate b32 vs BW roofline", r32, roof32, "tok/s", r32 / roof32,
                  "(reported)", None, details=details,
                  notes=["roofline of a generation step = (weights + KV cache bytes read) / copy bandwidth"])


# --- driver --------------------------------------------------------------------------------------------------

BENCHES = {"generation": bench_generation, "memory": bench_memory, "scoring": bench_scoring, "pair": bench_pair,
           "startup": bench_startup, "store": bench_store, "gpu": bench_gpu}


def run_bench(targets=None, repeats: int = 3, quick: bool = False, echo=print, threads: int | None = None
              ) -> list[Result]:
    """Run the named targets (all by default); prints each target's figures and the summary table.

    ``threads``: torch's intra-op threads here and in the child processes (default: torch's choice,
    one per core). On a machine that other processes also load, 1 thread is the stable choice:
    OpenMP threads that wait on each other for a busy core made generation 5-10x slower here.
    """
    targets = list(targets or TARGETS)
    unknown = [t for t in targets if t not in BENCHES]
    if unknown:
        raise ValueError(f"unknown bench target(s) {unknown}; known: {', '.join(TARGETS)}")
    import torch

    if threads:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)  # the children's

    echo(f"aep bench: {', '.join(targets)}; repeats={repeats}{' (quick sizes: a smoke test)' if quick else ''}; "
         f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
         f"CUDA {'yes' if torch.cuda.is_available() else 'no'}; load average {os.getloadavg()[0]:.1f}")
    results = []
    for name in targets:
        t = time.perf_counter()
        echo(f"\n== {name}")
        res = BENCHES[name](repeats, quick)
        for k, v in res.details.items():
            echo(f"  {k}: {v}")
        for note in res.notes:
            echo(f"  note: {note}")
        echo(f"  load average (1, 5, 15 min) at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        echo(f"  ours {_fmt(res.ours)} {res.unit}, baseline {_fmt(res.baseline)} {res.unit}, ratio {_fmt(res.ratio)}x, "
             f"goal {res.goal}: {'holds' if res.holds else 'n/a' if res.holds is None else 'DOES NOT HOLD'} "
             f"({time.perf_counter() - t:.0f} s)")
        results.append(res)
    echo("\n" + summary_table(results))
    return results


def summary_table(results: list[Result]) -> str:
    head = (f"{'target':<11} {'measure':<34} {'ours':>10} {'baseline':>10} {'unit':<6} {'ratio':>8}  "
            f"{'goal':<16} holds")
    return "\n".join([head, "-" * len(head)] + [r.line() for r in results])


def _child(argv: list[str]) -> None:
    kind, *args = argv
    if kind == "memory":
        out = _memory_child(args[0], args[1], int(args[2]))
    elif kind == "scoring":
        out = _scoring_child(args[0], int(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown child {kind!r}")
    print(json.dumps(out))


if __name__ == "__main__":  # pragma: no cover - the subprocesses of bench_memory / bench_scoring
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2:])
    else:
        raise SystemExit("use `aep bench`")
