"""Decoding on a pre-allocated KV cache: the ``static`` and ``compiled`` engines of ``generate``.

The eager engine (``generate.EagerDecoder``) keeps transformers' ``DynamicCache``, which concatenates
every layer's keys and values with the new token at every step (a copy of the whole cache per step).
Here the cache is allocated once:

- ``static``: ``SlotLayer``s hold each layer's keys and values in ``[batch, kv_heads, slots, head_dim]``
  buffers allocated once, write a step's slot in place and hand attention the same keys and values
  (and the same mask) that the dynamic cache would have, as a view. The step itself runs eagerly,
  with the warps of ``SamplingWarp`` (top-p by selection, not by arg-sort) and the statistics in
  row blocks: the tokens equal the eager engine's and the statistics too, bit for bit on one thread
  (with several, a float64 sum over a block of fewer rows than the batch may round differently: ~1e-15
  bits); float32 weights; with 16-bit weights, up to which of equally probable tokens top-p keeps
  (``top_p_ties``). A 16-bit model's statistics are computed in float32 (``draw_eagerly``) and, on a CPU
  with native bfloat16, its linears and one-token attention are ``cpu_bf16``'s (``models.load_model``).
- ``compiled``: transformers' ``StaticCache`` of ``capacity`` slots, and one ``torch.compile``d
  function per (model, batch, capacity, warps) that runs a whole step: the forward pass of one token
  per sequence over the full cache (a mask hides the empty slots), the warps, the Gumbel-max draw with
  the counter-based noise (made outside, an input) and both statistics. ``capacity`` is bucketed to a
  power of two (``cache_capacity``), so a grid of runs of nearby lengths compiles once;
  ``COMPILE_COUNTS`` counts the compilations. Different kernels: the same tokens and statistics as the
  eager engine up to float rounding (1e-3 bits in the tests), not bit for bit.

``choose_engine`` resolves ``engine="auto"``: ``static`` where the model's cache holds only keys and values.

Both engines compute the statistics of the columns ``core.columns`` lists under ``p`` and ``q`` (``raw`` and
``samp``): ``stats.token_stats`` with the rank and greedy token where those columns ask for them.
"""

from __future__ import annotations

import collections
import os
import time

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, get_layer_types_and_kwargs

from ..core.columns import RAW, SAMP, needs_rank
from ..core.sampling import RowWarps, gumbel_noise, sample
from ..core.stats import stats_precision, token_stats
from .models import cache_kwargs, input_device

ENGINES = ("eager", "static", "compiled", "auto")
MIN_CAPACITY = 64
SUPPORTED_LAYER_TYPES = ("full_attention", "sliding_attention", "chunked_attention")
# rows of [rows, vocab] float64 temporaries per statistics pass; 2^18 elements (2 MiB) stay in a core's L2
STATS_BLOCK_ELEMENTS = 1 << 18
COMPILE_COUNTS: collections.Counter = collections.Counter()  # (batch, capacity, vocab) -> compilations
RANK_RAW, RANK_SAMP = needs_rank(RAW), needs_rank(SAMP)  # token_stats' with_rank under p and under q


def cache_capacity(n_positions: int) -> int:
    """Slots of a static cache for ``n_positions`` (prompt + continuation): the next power of two, at least
    ``MIN_CAPACITY``, so that runs of nearby lengths share one compiled step."""
    return max(MIN_CAPACITY, 1 << max(0, int(n_positions) - 1).bit_length())


def cache_slots(engine: str, n_positions: int) -> int:
    """Positions the KV cache of a resolved ``engine`` holds for ``n_positions`` (prompt + continuation):
    ``cache_capacity`` for ``compiled``, ``n_positions`` for ``static`` (allocated at once) and ``eager``
    (grown to it)."""
    return cache_capacity(n_positions) if engine == "compiled" else int(n_positions)


def stats_row_block(vocab_size: int) -> int:
    """Rows per statistics pass at generation time (about ``STATS_BLOCK_ELEMENTS`` elements)."""
    return max(1, STATS_BLOCK_ELEMENTS // max(1, int(vocab_size)))


def supports_static_cache(model) -> bool:
    """True when every layer of the model caches plain keys and values (full or sliding-window attention)."""
    try:
        types, _ = get_layer_types_and_kwargs(model.config.get_text_config(decoder=True))
    except (AttributeError, TypeError, ValueError):
        return False
    return bool(types) and all(t in SUPPORTED_LAYER_TYPES for t in types)


def choose_engine(engine: str, model) -> str:
    """The engine ``generate`` runs: ``engine`` itself, or for ``"auto"`` the ``static`` engine (it saves
    the dynamic cache's copies and the arg-sort of top-p, and compiles nothing). Models whose cache holds
    more than keys and values (linear attention, shared layers) run eagerly. Measurements: docs/engine.md.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if engine == "auto":
        return "static" if supports_static_cache(model) else "eager"
    if engine != "eager" and not supports_static_cache(model):
        raise ValueError(f"engine={engine!r} needs a model whose layers all cache keys and values "
                         f"({', '.join(SUPPORTED_LAYER_TYPES)}); use engine='eager'")
    return engine


class SlotLayer(CacheLayerMixin):
    """One layer's keys and values in pre-allocated ``[batch, kv_heads, slots, head_dim]`` buffers.

    ``update`` writes the new positions in place and returns the view transformers' ``DynamicLayer`` (or,
    with ``sliding_window``, ``DynamicSlidingWindowLayer``) would return: every position so far, or the
    last ``sliding_window - 1`` before the new ones; ``get_mask_sizes`` answers as they do, so the masks
    are the same too. A sliding layer holds ``slots`` = ``2 × sliding_window`` (or the longest update):
    when full, its last ``sliding_window - 1`` positions move to the front (one copy every
    ``sliding_window`` steps), so it holds what the dynamic layer holds, not the whole sequence.
    """

    is_compileable = False
    is_croppable = False

    def __init__(self, capacity: int, sliding_window: int | None = None, longest_update: int = 1):
        super().__init__()
        self.sliding_window, self.is_sliding = sliding_window, sliding_window is not None
        self.slots = int(capacity) if not self.is_sliding else min(int(capacity), max(
            2 * sliding_window, sliding_window - 1 + int(longest_update)))
        self.length, self.stored = 0, 0  # positions seen; positions held in the buffers

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        batch, heads, _, k_dim = key_states.shape
        self.keys = key_states.new_zeros((batch, heads, self.slots, k_dim))
        self.values = value_states.new_zeros((batch, heads, self.slots, value_states.shape[-1]))
        self.device, self.is_initialized = key_states.device, True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        old = min(self.stored, self.sliding_window - 1) if self.is_sliding else self.stored
        if self.stored + new > self.slots and self.is_sliding and old + new <= self.slots:
            for buffer in (self.keys, self.values):  # keep the window's last positions, at the front
                buffer[:, :, :old] = buffer[:, :, self.stored - old : self.stored].clone()
            self.stored = old
        if self.stored + new > self.slots:
            raise RuntimeError(f"static cache full: {self.stored + new} positions in {self.slots} slots")
        self.keys[:, :, self.stored : self.stored + new] = key_states
        self.values[:, :, self.stored : self.stored + new] = value_states
        first, self.stored, self.length = self.stored - old, self.stored + new, self.length + new
        return self.keys[:, :, first : self.stored], self.values[:, :, first : self.stored]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        if not self.is_sliding:
            return self.length + query_length, 0
        offset = max(self.length - self.sliding_window + 1, 0)
        if self.length >= self.sliding_window:
            return self.sliding_window - 1 + query_length, offset
        return self.length + query_length, offset

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.slots

    def reset(self) -> None:
        self.length = self.stored = 0


def slot_cache(model, capacity: int, longest_update: int = 1) -> Cache:
    """A ``Cache`` of ``SlotLayer``s for every layer of ``model``: ``capacity`` positions in all, at most
    ``longest_update`` (the prompts' width) in one forward pass."""
    types, kwargs = get_layer_types_and_kwargs(model.config.get_text_config(decoder=True))
    return Cache(layers=[SlotLayer(capacity, kw.get("sliding_window") if t != "full_attention" else None,
                                   longest_update) for t, kw in zip(types, kwargs)])


def top_p_ties(model) -> str:
    """How the static engine's top-p breaks ties at the cut (``sampling.SelectTopP``): as transformers'
    arg-sort does (``"sort"``, bit for bit) for float32 logits; by token id for 16-bit ones, whose
    rounded logits tie at the cut in half the rows (the eager engine there may keep another of the
    equally probable tokens: the same probabilities, another token in rare draws)."""
    head = model.get_output_embeddings()
    weight = getattr(head, "weight", None)
    return "sort" if weight is None or weight.dtype == torch.float32 else "index"


class StepwiseDecoder:
    """A decoder whose every step is an eager forward pass over a cache: ``start`` runs the prompts,
    ``draw`` picks a token per sequence and computes both statistics, ``advance`` runs one forward pass.
    Subclasses give the cache (``self.ckw``), the warps (``self.warp``) and the row block of the
    statistics (``self.row_block``; None: the whole batch at once)."""

    model = device = ckw = warp = row_block = None
    logits = mask = next_pos = None

    def start(self, input_ids, mask, position_ids) -> None:
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=True,
                         logits_to_keep=1, **self.ckw)
        self.logits, self.mask, self.next_pos = out.logits[:, -1, :], mask, position_ids[:, -1] + 1

    def draw(self, seeds, step):
        """``(tokens [batch], raw stats, samp stats, logits [batch, vocab] float32)`` at this step."""
        return draw_eagerly(self.logits, self.warp, seeds, step, self.row_block)

    def advance(self, feed, active) -> None:
        """One forward pass: ``feed`` ``[batch]`` ids (the pad id where a sequence has stopped), ``active``
        ``[batch]`` bool (a stopped sequence's new slot stays masked)."""
        self.mask = torch.cat([self.mask, active.to(self.device).long().unsqueeze(-1)], dim=-1)
        out = self.model(input_ids=feed.unsqueeze(-1), attention_mask=self.mask,
                         position_ids=self.next_pos.unsqueeze(-1), use_cache=True, **self.ckw)
        self.logits, self.next_pos = out.logits[:, -1, :], self.next_pos + 1


class StaticDecoder(StepwiseDecoder):
    """The ``static`` engine: the eager loop's forward passes on ``SlotLayer``s, its warps and statistics
    with top-p by selection and the statistics in row blocks."""

    def __init__(self, model, samplings, eos, batch: int, n_positions: int, width: int = 1):
        self.model, self.device = model, input_device(model)
        self.cache = slot_cache(model, n_positions, longest_update=width)
        self.ckw = cache_kwargs(model, self.cache)
        self.warp = RowWarps(samplings, eos, top_p_by="select", top_p_ties=top_p_ties(model))
        self.row_block = stats_row_block(int(model.config.vocab_size))


def draw_eagerly(logits, warp, seeds, step: int, row_block: int):
    """Warp ``[batch, vocab]`` logits, draw a token per sequence (``sampling.sample``) and compute both
    statistics: ``(tokens, raw stats, samp stats, float32 logits)``. The statistics of float32 logits are
    computed in float64 in row blocks; those of a 16-bit model's logits in float32 in one pass (``stats.
    token_stats``: 1e-6 bits from float64; their own rounding is far larger)."""
    precision = stats_precision(logits.dtype)
    block = row_block if precision == torch.float64 else None
    logits = logits.float()
    q_logits = warp(logits)
    tokens = sample(q_logits, seeds, step)
    raw = token_stats(logits, tokens, with_rank=RANK_RAW, row_block=block, precision=precision)
    samp = token_stats(q_logits, tokens, with_rank=RANK_SAMP, row_block=block, precision=precision)
    return tokens, raw, samp, logits


def captured_step(model, cache, warp, tokens, positions, mask, noise):
    """One whole decoding step, for ``torch.compile``: the forward pass of ``tokens`` ``[batch, 1]`` at
    ``positions`` ``[batch, 1]`` over the static ``cache`` (``mask`` ``[batch, capacity]``), the warps,
    the Gumbel-max draw with ``noise`` ``[batch, vocab]``, and the statistics under ``p`` and ``q``."""
    out = model(input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=True,
                **cache_kwargs(model, cache))
    return draw_in_graph(out.logits[:, -1, :], warp, noise)


def draw_in_graph(logits, warp, noise):
    """Warps, Gumbel-max draw and statistics of ``[batch, vocab]`` logits (no Python-side data flow)."""
    logits = logits.float()
    q_logits = logits
    dummy_ids = torch.zeros((logits.shape[0], 1), dtype=torch.long, device=logits.device)
    for processor in warp.processors:
        q_logits = processor(dummy_ids, q_logits)
    if warp.sampling.greedy:
        q_logits = torch.full_like(q_logits, float("-inf")).scatter(-1, q_logits.argmax(-1, keepdim=True), 0.0)
    drawn = (torch.log_softmax(q_logits, -1) + noise).argmax(-1)
    raw = token_stats(logits, drawn, with_rank=RANK_RAW)
    samp = token_stats(q_logits, drawn, with_rank=RANK_SAMP)
    return drawn, raw, samp, logits


COMPILED_STEPS: dict = {}
# torch.compile's backend for the compiled step: "inductor" (C++ on a CPU, Triton and CUDA graphs on a GPU);
# the tests count compilations with "eager" (dynamo's tracing and guards without code generation)
COMPILE_BACKEND = os.environ.get("AEP_COMPILE_BACKEND", "inductor")


def compiled_step(batch: int, capacity: int, vocab: int, label: str):
    """The compiled ``captured_step`` for one shape (``batch``, ``capacity``, ``vocab``) and warps ``label``
    (``mode="reduce-overhead"`` on CUDA: CUDA graphs); built once per process, counted in
    ``COMPILE_COUNTS``. Dynamo's own guards still recompile it for another model of the same shapes."""
    key = (batch, capacity, vocab, label, COMPILE_BACKEND)
    if key not in COMPILED_STEPS:
        options = {"mode": "reduce-overhead"} if torch.cuda.is_available() and COMPILE_BACKEND == "inductor" else {}
        COMPILED_STEPS[key] = torch.compile(captured_step, dynamic=False, backend=COMPILE_BACKEND, **options)
        COMPILE_COUNTS[(batch, capacity, vocab)] += 1
    return COMPILED_STEPS[key]


def forget_compiled_steps() -> None:
    """Drop every compiled step and dynamo's caches (the next compiled run compiles afresh)."""
    COMPILED_STEPS.clear()
    COMPILE_COUNTS.clear()
    torch._dynamo.reset()


class CompiledDecoder:
    """The ``compiled`` engine: transformers' ``StaticCache`` of ``cache_capacity`` slots, the prompts run
    eagerly, then every step (forward, warps, draw, statistics) as one compiled call. ``compile_s``:
    seconds of the first compiled step (the compilation, when this shape is new to the process)."""

    def __init__(self, model, samplings, eos, batch: int, n_positions: int, width: int = 1):
        from transformers import StaticCache

        self.model, self.device, self.batch = model, input_device(model), batch
        self.capacity = cache_capacity(n_positions)
        self.cache = StaticCache(config=model.config, max_cache_len=self.capacity)
        self.warp = RowWarps(samplings, eos, top_p_by="sort").uniform  # generate() gives one sampling here
        sampling = self.warp.sampling
        vocab = int(model.config.vocab_size)
        self.step_fn = compiled_step(batch, self.capacity, vocab, sampling.label + f":{sorted(eos)}")
        self.row_block = stats_row_block(vocab)
        self.compile_s, self.width, self.feed = 0.0, 0, None

    def start(self, input_ids, mask, position_ids) -> None:
        self.width = input_ids.shape[1]
        self.mask = torch.zeros((self.batch, self.capacity), dtype=torch.long, device=self.device)
        self.mask[:, : self.width] = mask
        out = self.model(input_ids=input_ids, attention_mask=self.mask, position_ids=position_ids, use_cache=True,
                         logits_to_keep=1, **cache_kwargs(self.model, self.cache))
        self.logits, self.next_pos = out.logits[:, -1, :], position_ids[:, -1] + 1

    def draw(self, seeds, step):
        if self.feed is None:  # the first token: from the prompts' logits, eagerly
            return draw_eagerly(self.logits, self.warp, seeds, step, self.row_block)
        noise = gumbel_noise(seeds, step, int(self.model.config.vocab_size), device=self.device)
        began = time.perf_counter()
        out = self.step_fn(self.model, self.cache, self.warp, self.feed.unsqueeze(-1),
                           self.next_pos.unsqueeze(-1), self.mask, noise)
        if step == 1:
            self.compile_s = time.perf_counter() - began
        self.next_pos = self.next_pos + 1
        return out

    def advance(self, feed, active) -> None:
        """Record the next step's input (it runs inside the next ``draw``) and unmask its slot where active."""
        self.feed = feed
        self.mask[:, int(self.cache.get_seq_length())] = active.to(self.device).long()
