"""Memory: the allocator's tuning and trimming, and the estimates that size a batch.

- ``keep_freed_blocks`` / ``release_free_memory``: glibc's thresholds and ``malloc_trim`` (CPU);
- ``gc_paused``: the cyclic garbage collector off for a block (model loading);
- ``kv_cache_bytes``, ``memory_per_sequence``, ``batch_size_for_memory``: how many sequences fit in the
  memory free on a device;
- ``memory_limit_bytes``, ``check_generation_fits``, ``check_scoring_fits``: work whose estimate exceeds
  the memory the process can get is refused before it starts (``MemoryEstimateError``, one line: what
  it needs, what is available, the length that fits), never left to the out-of-memory killer.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading


@contextlib.contextmanager
def gc_paused():
    """Run a block with Python's cyclic garbage collector off (restored after, even on error).

    The first load in a process imports some 2,900 modules (torch, transformers, their dependencies);
    the millions of objects they create trigger full collections that find nothing to free. Pausing
    the collector for the load cut the start-up of a fresh process by 0.55-0.7 s here (SmolLM2 3.69 ->
    3.14 s, Gemma 4.78 -> 4.07 s, median of 4; ``aep bench --target startup``). Reference counting
    still frees everything else at once; the few cycles wait for the next collection.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_LIBC = None


MMAP_THRESHOLD_BYTES = 64 * 2**20


TRIM_THRESHOLD_BYTES = 256 * 2**20


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def libc():
    """glibc through ctypes (``malloc_trim``, ``mallopt``, ``madvise``), or ``False`` off glibc."""
    global _LIBC
    import ctypes
    import ctypes.util
    import sys

    if _LIBC is None:
        _LIBC = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                lib.malloc_trim, lib.mallopt  # noqa: B018 (glibc only; musl has neither)
                _LIBC = lib
            except (OSError, AttributeError):
                pass
    return _LIBC


def keep_freed_blocks() -> bool:
    """Let the statistics' temporaries (a few MiB each, every row block) be reused, not re-faulted.

    glibc serves such blocks by ``mmap`` and unmaps them on ``free`` (or trims them off the heap), so
    every block of every step touched fresh pages: the statistics of one Gemma position took 6.8 ms
    that way and 1.2 ms with blocks up to 64 MiB kept on the heap and the heap trimmed only above
    256 MiB free (``aep bench --target scoring``). Larger blocks (a chunk's logits) still go back to the
    system. ``generate`` hands free pages back every few steps (``release_free_memory``), so memory
    stays bounded. Process-wide; off with ``AEP_MALLOC_TUNE=0``, or when ``MALLOC_*_`` variables
    already set glibc's thresholds. Returns whether the thresholds were set.
    """
    if os.environ.get("AEP_MALLOC_TUNE", "1") == "0":
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")):
        return False
    lib = libc()
    if not lib:
        return False
    return bool(lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        lib.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the system (glibc ``malloc_trim``; elsewhere a no-op).

    A CPU generation frees and re-allocates blocks of a few MiB every step (the KV cache grows, the
    ``[batch, vocab]`` temporaries come and go); glibc keeps the freed pages, and the heap grew by
    ~3.4 MiB per step: 3.5 GiB above the model after 1,024 Gemma tokens. ``generate`` calls this every
    ``TRIM_EVERY`` steps (``aep bench --target memory`` measures both).
    """
    lib = libc()
    if lib:
        lib.malloc_trim(0)



def kv_cache_bytes(config, n_tokens: int, batch: int = 1, bytes_per=4) -> int:
    """Bytes of a KV cache of ``n_tokens`` (sliding-window layers hold at most their window)."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    window = getattr(config, "sliding_window", None) or n_tokens
    per_layer = [min(n_tokens, window) if t == "sliding_attention" else n_tokens for t in types]
    return 2 * batch * heads * head_dim * bytes_per * sum(per_layer)


# ``[vocab]`` float32 rows a sequence holds at once during a step: the logits, the warped logits,
# log-probabilities and probabilities under p and q, the noise, and the statistics' products.
STEP_ROWS_PER_SEQUENCE = 12


MEMORY_FRACTION = 0.8  # of the free memory a batch may plan to use (allocator slack, fragmentation)


def free_memory_bytes(device) -> int:
    """Memory a new batch can use: free device memory plus the torch cache on CUDA, else available RAM."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    import psutil

    return int(psutil.virtual_memory().available)


def sequence_bytes(config, n_positions: int, bytes_per: int) -> int:
    """Bytes one sequence of ``n_positions`` adds to a generation batch of a model with this ``config`` and
    ``bytes_per`` bytes per weight: its KV cache, ``STEP_ROWS_PER_SEQUENCE`` float32 ``[vocab]`` rows and
    16 ``[hidden]`` activations."""
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    return (kv_cache_bytes(config, n_positions, 1, bytes_per)
            + STEP_ROWS_PER_SEQUENCE * vocab * 4 + 16 * hidden * bytes_per)


def weight_bytes(model) -> int:
    """Bytes per element of the model's weights (4 for float32, 2 for bfloat16)."""
    return next(model.parameters()).element_size()


def model_device(model):
    """The device of the model's first weight (where its caches and logits live)."""
    return next(model.parameters()).device


def memory_per_sequence(model, n_positions: int) -> int:
    """Bytes one sequence of ``n_positions`` (prompt + continuation) adds to a generation batch."""
    return sequence_bytes(model.config, n_positions, weight_bytes(model))


def batch_size_for_memory(model, n_positions: int, requested: int, free_bytes: int | None = None,
                          prompt_tokens: int = 0) -> int:
    """The largest batch, at most ``requested``, whose KV cache and step temporaries fit in memory.

    ``free_bytes`` defaults to ``free_memory_bytes`` of the model's device; a batch plans to use
    ``MEMORY_FRACTION`` of it, and never runs below 1 sequence. Whether one sequence of ``n_positions``
    (``prompt_tokens`` of them the prompt) fits at all is checked first against ``memory_limit_bytes``:
    ``MemoryEstimateError`` when it does not (``check_generation_fits``).
    """
    check_generation_fits(model.config, weight_bytes(model), n_positions, prompt_tokens, model_device(model))
    if free_bytes is None:
        free_bytes = free_memory_bytes(model_device(model))
    fits = int(free_bytes * MEMORY_FRACTION) // max(memory_per_sequence(model, n_positions), 1)
    return max(1, min(int(requested), fits))


class MemoryEstimateError(RuntimeError):
    """Work whose memory estimate exceeds what the process can get, refused before it starts; the message
    (one line) says what it needs, what is available and the length that fits."""


def memory_limit_bytes(device) -> int:
    """The most memory new work on ``device`` can get: on CUDA what ``free_memory_bytes`` says; on a CPU the
    available RAM, within the process's address-space limit (``ulimit -v``: the limit less the address
    space already used) and its cgroup's limit (``memory.max`` less ``memory.current``) where these are set."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return free_memory_bytes(device)
    import psutil

    limits = [int(psutil.virtual_memory().available)]
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
        if soft not in (resource.RLIM_INFINITY, -1):
            limits.append(max(0, int(soft) - int(psutil.Process().memory_info().vms)))
    except (ImportError, OSError, ValueError):
        pass
    limits.append(cgroup_headroom_bytes())
    return min(x for x in limits if x is not None)


def cgroup_headroom_bytes(root: str = "/sys/fs/cgroup") -> int | None:
    """``memory.max - memory.current`` of this process's cgroup (v2), or None without a limit there."""
    try:
        with open(os.path.join(root, "memory.max")) as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open(os.path.join(root, "memory.current")) as f:
            return max(0, int(limit) - int(f.read().strip()))
    except (OSError, ValueError):
        return None


def longest_fitting(need, budget: int, upper: int) -> int:
    """The largest ``n`` in ``0..upper`` with ``need(n) <= budget`` (``need`` non-decreasing); 0 when none."""
    low, high = 0, int(upper)
    while low < high:
        mid = (low + high + 1) // 2
        if need(mid) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


def gigabytes(n_bytes: float) -> str:
    """``n_bytes`` in GB (10^9 bytes) with one decimal, below 1 GB in MB (10^6 bytes)."""
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.1f} MB"


def budget_text(limit: int, device) -> str:
    """What a refusal says about the memory: ``"the 9.6 GB a run may plan on (80% of the 12.0 GB
    available on cpu)"``."""
    return (f"the {gigabytes(MEMORY_FRACTION * limit)} a run may plan on ({MEMORY_FRACTION:.0%} of the "
            f"{gigabytes(limit)} available on {device})")


def check_generation_fits(config, bytes_per: int, n_positions: int, prompt_tokens: int, device,
                          limit_bytes: int | None = None, prompt_known: bool = True, slots=None) -> None:
    """Raise ``MemoryEstimateError`` unless one sequence of ``n_positions`` (``prompt_tokens`` of them the
    prompt) fits in ``MEMORY_FRACTION`` of ``limit_bytes`` (default ``memory_limit_bytes(device)``), by
    ``sequence_bytes`` of the cache slots it takes (``slots(n_positions)``; default ``n_positions``). The
    message names the longest ``max_new_tokens`` that fits; ``prompt_known=False`` (planning, before the
    prompts are tokenized): ``n_positions`` is a lower bound and the message names the positions (prompt
    and new tokens) that fit."""
    slots = slots or int

    def need(n: int) -> int:
        return sequence_bytes(config, slots(n), bytes_per)

    limit = memory_limit_bytes(device) if limit_bytes is None else int(limit_bytes)
    budget = int(limit * MEMORY_FRACTION)
    if need(n_positions) <= budget:
        return
    fit = longest_fitting(need, budget, n_positions)
    if prompt_known:
        advice = (f"at most max_new_tokens={fit - prompt_tokens:,} fits (the prompt takes {prompt_tokens:,})"
                  if fit > prompt_tokens else "not even the prompt fits: free memory or use a smaller model")
    else:
        advice = (f"at most {fit:,} positions (prompt and new tokens) fit: lower max_new_tokens below that"
                  if fit > 1 else "not even one position fits: free memory or use a smaller model")
    raise MemoryEstimateError(
        f"max_new_tokens={n_positions - prompt_tokens:,} does not fit in memory: one sequence of {n_positions:,} "
        f"positions needs {gigabytes(need(n_positions))} (its KV cache and step temporaries), more than "
        f"{budget_text(limit, device)}; {advice}")


def activation_bytes(config, n_tokens: int, bytes_per: int = 4) -> int:
    """Bytes of the live activations of one forward pass over ``n_tokens`` tokens: the residual stream, its
    normed copy and two layer outputs (``4 x hidden``), the queries and the keys and values expanded to
    every head (``3 x heads x head_dim``), and a gated MLP's gate, up and product (``3 x intermediate``).
    An upper bound of one layer's temporaries; the cache of a pass without one is not among them."""
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    intermediate = int(getattr(config, "intermediate_size", None) or 4 * hidden)
    return int(n_tokens) * bytes_per * (4 * hidden + 3 * heads * head_dim + 3 * intermediate)


def scoring_bytes(config, n_window: int, logit_rows: int, bytes_per: int, pass_tokens: int | None = None) -> int:
    """Bytes a scoring pass holds at once beside the weights: one block's ``[min(logit_rows, n_window), vocab]``
    logits and the activations and attention masks of one forward pass of ``min(pass_tokens, n_window)`` tokens
    (``activation_bytes``, ``attention_mask_bytes``); a window fed in several passes holds its KV cache of
    ``n_window`` tokens too, one fed in a single pass (``pass_tokens`` None or at least ``n_window``) none."""
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    fed = int(n_window) if pass_tokens is None else min(int(pass_tokens), int(n_window))
    cache = kv_cache_bytes(config, n_window, 1, bytes_per) if fed < n_window else 0
    return (cache + activation_bytes(config, fed, bytes_per) + attention_mask_bytes(config, fed, n_window)
            + min(int(logit_rows), int(n_window)) * vocab * bytes_per)


def attention_mask_bytes(config, n_queries: int, n_keys: int) -> int:
    """Bytes of the attention masks a pass of ``n_queries`` tokens over ``n_keys`` materializes: none for a model
    whose every layer is causal over all positions (sdpa's causal flag), two ``[n_queries, n_keys]`` masks of
    4 bytes per entry (the full and the sliding one, an upper bound) for one with sliding-window layers (Gemma 3).
    Measured (SmolLM2 / Gemma 3 270M, 8,000 tokens in one float32 pass): 311 / 822 MiB above the loaded model,
    estimated 328 / 911."""
    if "sliding_attention" not in (getattr(config, "layer_types", None) or ()):
        return 0
    return 2 * int(n_queries) * int(n_keys) * 4


def check_scoring_fits(scorers, n_tokens: int, n_window: int, logit_rows: int, device,
                       limit_bytes: int | None = None, error=MemoryEstimateError, pass_tokens: int | None = None
                       ) -> None:
    """Raise ``error`` (a ``MemoryEstimateError``) unless scoring a text of ``n_tokens`` in windows of
    ``n_window`` tokens by every ``(config, bytes_per)`` of ``scorers`` (the scorer and a distinct
    reference run side by side) fits in ``MEMORY_FRACTION`` of ``limit_bytes`` (default
    ``memory_limit_bytes(device)``), by ``scoring_bytes`` with ``pass_tokens`` per forward pass (None: the
    window in one pass). The message names the longest window that fits."""

    def need(n: int) -> int:
        return sum(scoring_bytes(config, n, logit_rows, bytes_per, pass_tokens) for config, bytes_per in scorers)

    limit = memory_limit_bytes(device) if limit_bytes is None else int(limit_bytes)
    budget = int(limit * MEMORY_FRACTION)
    if need(n_window) <= budget:
        return
    fit = longest_fitting(need, budget, n_window)
    advice = (f"at most {fit:,} tokens fit in one window: score at most that much of the text at a time, or "
              f"slide a window that fits (score_ids/score_text: max_context={fit} with stride=<tokens>)"
              if fit > 1 else "not even two tokens fit: free memory or use a smaller model")
    raise error(
        f"text of {n_tokens:,} tokens does not fit in memory: one window of {n_window:,} tokens needs "
        f"{gigabytes(need(n_window))} (its activations, KV cache and one block of logits), more than "
        f"{budget_text(limit, device)}; {advice}")


MADV_POPULATE_READ = 22  # Linux >= 5.14


class mapped_weights_faulted_in:
    """Context manager: populate the page tables of a CPU model's weights in a background thread.

    safetensors maps the weight file lazily, so without this the first forward pass pays the page
    faults (and a resident-memory reading right after the load misses the weights). One
    ``madvise(MADV_POPULATE_READ)`` per contiguous range, called through ctypes (which drops the
    GIL), runs while the caller does other work; leaving the block waits for it. A no-op off Linux,
    on CUDA, or on kernels without that advice (the first forward then faults the pages in).
    """

    def __init__(self, model):
        self.ranges = weight_page_ranges(model)
        self.thread = None

    def __enter__(self):
        lib = libc()
        if lib and self.ranges:
            import ctypes

            def populate():
                for start, length in self.ranges:
                    lib.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), ctypes.c_int(MADV_POPULATE_READ))

            self.thread = threading.Thread(target=populate, name="aep-fault-in-weights", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.thread is not None:
            self.thread.join()
        return False


def weight_page_ranges(model) -> list[tuple[int, int]]:
    """The page-aligned, merged ``(address, length)`` ranges of a CPU model's parameters."""
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    spans = sorted(
        (p.data_ptr(), p.data_ptr() + p.numel() * p.element_size())
        for p in model.parameters() if p.device.type == "cpu" and p.numel())
    merged: list[list[int]] = []
    for start, end in spans:
        start -= start % page
        if merged and start <= merged[-1][1] + page:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b - a) for a, b in merged]
