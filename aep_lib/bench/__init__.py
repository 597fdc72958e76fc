"""Benchmarks of ``aep bench``: each target measured against its baseline in the same run.

Targets (2 CPU cores, float32 unless said), one module each:

- ``generation`` (``generation.py``): float32 ``generate`` (``engine="auto"``) at batch 16 (16 × 512 tokens,
  SmolLM2, temperature 1, top-p 0.95) against the eager engine (the reference loop) in the same process;
  goal ≥ 2.5× (aim ≥ 210 tok/s); both as fractions of the float32 compute roofline; batch 1 against the
  memory-bandwidth roofline beside it (aim ≤ 1.3×).
- ``batch`` (``generation.py``): float32 at batches 16, 32, 64 against the compute roofline; goal ≥ 35% at
  the best batch.
- ``bf16`` (``generation.py``): bfloat16 weights at batch 16, ours with all statistics against transformers'
  ``generate()`` with none (same model, dtype, warps), both as fractions of the bf16 compute roofline.
  Goal ≥ 1.5×.
- ``memory`` (``peak_memory.py``): Gemma (262k vocabulary), 1 sequence × 2,048 tokens, peak resident
  memory of ours and of that baseline, each in a fresh process. Goal ≥ 2× lower; ours grows with
  length by the KV cache only.
- ``scoring`` (``scoring.py``): a 4,096-token text under Gemma, bfloat16 against float32 (each in a child
  process), with each dtype's roofline fraction and peak memory. Goals ≥ 2× and ≤ model + 1 GB.
- ``long`` (``long_text.py``): 40,000 tokens under SmolLM2 (context 8,192) with strides 8,192 and 4,096
  against scoring one context in one pass: every token scored once, peak ≤ model + 1 GiB, ≥ 0.5×.
- ``pair`` (``pair.py``): the joint pass of two models on one vocabulary (SmolLM2 and a perturbed copy)
  against one model's scoring pass. Goal ≤ 2.2×.
- ``startup`` (``startup.py``): a fresh ``python -c "import aep_lib.engine.models; load_model(<cached
  embedded>)"``, from launch until the model is loaded (the exit reported beside it). Goal < 5 s.
- ``store`` (``store_scale.py``): 10 million synthetic token rows written in the store's layout (10,000
  runs × 1,000 tokens); the per-run summary query in DuckDB (``store.connect()`` included), against the
  same rows compacted into one file. Goal: at most 2× (thousands of run files cost no more than that).
- ``loglik`` and ``texts`` (``loglik.py``): a ~10,000-token SmolLM2 text in 8,192-token windows with every
  statistic against the plain log-likelihood pass (forward, log_softmax, gather: lm-evaluation-harness) over
  the same windows (goal ≥ 1.0×, peak ≤ model + 1 GiB); 64 texts of 100-300 tokens (SmolLM2, Gemma) scored in
  batches against one at a time (≥ 3×) and against the plain pass batched (≥ 1.0×).
- ``gpu`` (``gpu.py``): only where CUDA is present: a Llama-3.1-8B-shaped model with random bf16
  weights; generation at batch 1 and 32 against the memory-bandwidth roofline, scoring against the
  bf16 compute roofline.

Timings on a shared machine are noisy: ours and the baseline are interleaved within each repeat and
medians are reported. ``--quick`` runs tiny sizes, and SmolLM2 where the target names Gemma (a smoke
test of the benchmark code, not a measurement). ``common.py`` holds what the targets share; the
``memory`` and ``scoring`` targets measure in child processes (``python -m aep_lib.bench --child``,
``__main__.py``).
"""

from __future__ import annotations

import os
import time

from .common import Result, fmt, summary_table
from .generation import bench_batch, bench_bf16, bench_generation
from .gpu import bench_gpu
from .loglik import bench_loglik, bench_texts
from .long_text import bench_long
from .pair import bench_pair
from .peak_memory import bench_memory
from .scoring import bench_scoring
from .startup import bench_startup
from .store_scale import bench_store

__all__ = ["BENCHES", "TARGETS", "Result", "run_bench", "summary_table"]

BENCHES = {"generation": bench_generation, "batch": bench_batch, "bf16": bench_bf16, "memory": bench_memory,
           "scoring": bench_scoring, "long": bench_long, "pair": bench_pair, "startup": bench_startup,
           "store": bench_store, "gpu": bench_gpu, "loglik": bench_loglik, "texts": bench_texts}
TARGETS = tuple(BENCHES)


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

    from ..engine.models import cpu_features

    cpu = cpu_features()
    echo(f"aep bench: {', '.join(targets)}; repeats={repeats}{' (quick sizes: a smoke test)' if quick else ''}; "
         f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs ({cpu['capability']}, "
         f"bfloat16 {'native' if cpu['bf16'] else 'emulated'}{', AMX' if cpu['amx'] else ''}), "
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
        echo(f"  ours {fmt(res.ours)} {res.unit}, baseline {fmt(res.baseline)} {res.unit}, ratio {fmt(res.ratio)}x, "
             f"goal {res.goal}: {'holds' if res.holds else 'n/a' if res.holds is None else 'DOES NOT HOLD'} "
             f"({time.perf_counter() - t:.0f} s)")
        results.append(res)
    echo("\n" + summary_table(results))
    return results
