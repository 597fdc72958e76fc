"""Memory: the allocator's tuning and trimming, and the estimates that size a batch.

- ``keep_freed_blocks`` / ``release_free_memory``: glibc's thresholds and ``malloc_trim`` (CPU);
- ``gc_paused``: the cyclic garbage collector off for a block (model loading);
- ``kv_cache_bytes``, ``memory_per_sequence``, ``batch_size_for_memory``: how many sequences fit in the
  memory free on a device.
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


def memory_per_sequence(model, n_positions: int) -> int:
    """Bytes one sequence of ``n_positions`` (prompt + continuation) adds to a generation batch."""
    config = model.config
    bytes_per = next(model.parameters()).element_size()
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    return (kv_cache_bytes(config, n_positions, 1, bytes_per)
            + STEP_ROWS_PER_SEQUENCE * vocab * 4 + 16 * hidden * bytes_per)


def batch_size_for_memory(model, n_positions: int, requested: int, free_bytes: int | None = None) -> int:
    """The largest batch, at most ``requested``, whose KV cache and step temporaries fit in memory.

    ``free_bytes`` defaults to ``free_memory_bytes`` of the model's device; a batch plans to use
    ``MEMORY_FRACTION`` of it. Never below 1 (one sequence that does not fit fails in torch with its
    own out-of-memory error, which the run stores).
    """
    if free_bytes is None:
        free_bytes = free_memory_bytes(next(model.parameters()).device)
    fits = int(free_bytes * MEMORY_FRACTION) // max(memory_per_sequence(model, n_positions), 1)
    return max(1, min(int(requested), fits))



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
