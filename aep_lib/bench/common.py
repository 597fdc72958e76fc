"""What the benchmark targets share: the ``Result`` row and its formatting, this process's memory, the
child processes, and the FLOP counts of the compute roofline."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

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
        return (f"{self.target:<11} {self.measure:<34} {fmt(self.ours):>10} {fmt(self.baseline):>10} "
                f"{self.unit:<6} {fmt(self.ratio):>7}x  {self.goal:<16} {holds}")


def summary_table(results: list[Result]) -> str:
    head = (f"{'target':<11} {'measure':<34} {'ours':>10} {'baseline':>10} {'unit':<6} {'ratio':>8}  "
            f"{'goal':<16} holds")
    return "\n".join([head, "-" * len(head)] + [r.line() for r in results])


def fmt(x) -> str:
    """A figure for the table: 3 significant digits below 100, whole numbers with separators above."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:,.0f}"


def median(xs) -> float:
    """The median as a float (NaN for no values)."""
    return float(statistics.median(xs)) if xs else float("nan")


def say(msg: str) -> None:
    """A progress line on stderr (the figures go to ``echo``)."""
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


def param_bytes(model) -> int:
    """Bytes of the model's parameters."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


# --- child processes -------------------------------------------------------------------------------------


def run_child(*args: str, timeout: float = 3600, env: dict | None = None) -> dict:
    """``python -m aep_lib.bench --child ARGS`` in a fresh process; its JSON answer (last line).

    The child side is ``aep_lib/bench/__main__.py``.
    """
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "aep_lib.bench", "--child", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"bench child {args} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the compute roofline --------------------------------------------------------------------------------


EMULATED_MATMUL_SIZE = 512  # bfloat16 products on a CPU without native bfloat16 run far slower


def matmul_flops(size: int | None = None, repeats: int = 5, dtype=None) -> float:
    """This machine's matrix-multiply rate in ``dtype`` (default float32), FLOP/s (median of ``repeats``
    ``size``³ products; ``size`` 2048, or ``EMULATED_MATMUL_SIZE`` for bfloat16 on a CPU that emulates it)."""
    import torch

    if size is None:
        from ..engine.models import cpu_features

        size = EMULATED_MATMUL_SIZE if dtype == torch.bfloat16 and not cpu_features()["bf16"] else 2048
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2 * size**3 / median(times)


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


# --- clocks and rooflines of generation ------------------------------------------------------------------


class Timed:
    """Wall and CPU seconds of a ``with`` block (``.wall``, ``.cpu``: this process's user + system time).

    On a machine that other work also loads, the CPU seconds of a one-thread run measure the code; the
    wall seconds measure the code and the scheduler (both are reported; ratios use the wall clock).
    """

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        return False


def copy_bandwidth(n_bytes: int = 256 * MIB, repeats: int = 5) -> float:
    """This machine's memory copy rate, bytes/s counting read + write (median of ``repeats`` copies of
    ``n_bytes``, far larger than the caches)."""
    import torch

    x = torch.ones(n_bytes // 4)
    y = torch.empty_like(x)
    y.copy_(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        y.copy_(x)
        times.append(time.perf_counter() - t)
    return 2 * n_bytes / median(times)


def decode_flops_per_token(model, n_prompt: int, n_new: int) -> float:
    """FLOP per generated token of a decoding step (weights, and attention over the mean context)."""
    c = model.config
    weights = 2 * sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return float(weights) + 4.0 * c.num_attention_heads * head_dim * c.num_hidden_layers * (n_prompt + n_new / 2)
