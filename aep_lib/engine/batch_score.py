"""Scoring many texts at once: each text's table equal to its ``score.score_ids`` table (within float rounding).

Texts of different lengths go through the model together, right-padded to the longest of their batch, with
an attention mask and explicit position ids (``0..n-1`` per text: a text's tokens see what they see alone;
the padding after a text never reaches it). The texts are sorted by length first, so that a batch holds
texts of similar lengths and little padding. Only the scored positions' hidden states reach the output layer
and the statistics (``score_rows``), in blocks of ``score_rows.logit_rows`` rows that may span several
texts: the padding and the prompts cost no output-layer product and no statistics.

A text longer than the context window (scored in sliding windows), and every text of a model whose logits
are not its output layer of its base's hidden states (``score_rows.head_matches``), is scored alone by
``score_ids``. With a reference model (the joint pass) both models run over the same batch.

Batch size: at most ``batch_size`` texts (default ``DEFAULT_TEXTS``), fewer where their activations would not
fit in ``memory.MEMORY_FRACTION`` of the memory free now (``texts_per_batch``), and on a CPU at most
``CPU_BATCH_TOKENS`` padded tokens (larger batches were no faster on 2 cores). A batch that runs out of memory
all the same is split in two and retried, down to one text; texts whose single forward pass the memory guard
refuses are scored alone by ``score_ids``, in chunks (``one_pass_fits``).
"""

from __future__ import annotations

import pandas as pd
import torch

from ..core.sampling import eos_ids

from .memory import (MEMORY_FRACTION, check_scoring_fits, free_memory_bytes, model_device, release_free_memory,
                     weight_bytes)
from .models import input_device, out_of_memory
from .score import (ScoredText, ScoringMemoryError, Warps, context_window, default_row_block, score_ids, scored_frame,
                    scored_text)
from .score_rows import head_logits, head_matches, logit_rows, stats_row_block, stats_rows
from .spans import ScoringError, tokenize_with_prompt

DEFAULT_TEXTS = 64  # texts per batch at most, unless asked otherwise
CPU_BATCH_TOKENS = 4096  # padded tokens per batch on a CPU
GPU_BATCH_TOKENS = 65536


def check_batch_size(batch_size) -> None:
    """``ScoringError`` unless ``batch_size`` is None (the memory-based default) or a whole number >= 1."""
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1):
        raise ScoringError(f"batch size must be a whole number of texts, at least 1, got {batch_size}")


def activation_bytes(config, n_texts: int, n_positions: int, bytes_per: int) -> int:
    """An estimate of what a batch's forward pass holds beside the weights: per token the residual stream and
    a layer's temporaries (6 hidden-size and 3 intermediate-size vectors), the batch's last hidden states in
    float32, and per text one layer's ``[heads, n, n]`` float32 attention scores."""
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    inter = int(getattr(config, "intermediate_size", 0) or 4 * hidden)
    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    tokens = n_texts * n_positions
    return tokens * ((6 * hidden + 3 * inter) * bytes_per + 4 * hidden) + 4 * n_texts * heads * n_positions**2


def texts_per_batch(model, n_positions: int, requested: int | None = None, free_bytes: int | None = None) -> int:
    """Texts of up to ``n_positions`` tokens per batch: at most ``requested`` (default ``DEFAULT_TEXTS``), within
    ``CPU_BATCH_TOKENS``/``GPU_BATCH_TOKENS`` padded tokens, and within ``MEMORY_FRACTION`` of ``free_bytes``
    (default: the memory free now on the model's device) less one block of logits and statistics; at least 1."""
    check_batch_size(requested)
    device = model_device(model)
    free = free_memory_bytes(device) if free_bytes is None else int(free_bytes)
    vocab = int(model.config.vocab_size)
    budget = int(free * MEMORY_FRACTION) - 4 * vocab * logit_rows(vocab) - 3 * 8 * vocab * stats_row_block(vocab)
    cap = (GPU_BATCH_TOKENS if device.type == "cuda" else CPU_BATCH_TOKENS) // max(1, n_positions)
    n = max(1, min(requested or DEFAULT_TEXTS, cap))
    while n > 1 and activation_bytes(model.config, n, n_positions, weight_bytes(model)) > budget:
        n //= 2
    return n


def plan_batches(lengths: list[int], batch_size: int | None, model) -> list[list[int]]:
    """Indices of the texts per batch, longest texts first; each batch within ``texts_per_batch`` of its longest."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, i = [], 0
    while i < len(order):
        n = texts_per_batch(model, lengths[order[i]], batch_size)
        batches.append(order[i : i + n])
        i += n
    return batches


def hidden_rows(model, batch: list[tuple[torch.Tensor, int]]) -> torch.Tensor:
    """``[rows, hidden]``: the last hidden states at every scored text's predicting positions (text by text,
    in order: positions ``first-1 .. n-2`` of each), from one right-padded pass of ``model.base_model``."""
    device = input_device(model)
    width = max(len(ids) for ids, _ in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for b, (t, _) in enumerate(batch):
        ids[b, : len(t)] = t
        mask[b, : len(t)] = 1
    pos = torch.arange(width).expand(len(batch), width)
    out = model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                           use_cache=False).last_hidden_state
    flat = torch.cat([b * width + torch.arange(first - 1, len(t) - 1) for b, (t, first) in enumerate(batch)])
    return out.reshape(-1, out.shape[-1]).index_select(0, flat.to(out.device))


def logit_blocks(model, batch, reference=None):
    """Yield ``(owner [k], targets [k], token_ids [k], logits [k, vocab], reference logits or None)`` blocks of
    ``score_rows.logit_rows`` scored rows of ``batch`` (``(ids tensor, first scored)``, ``first >= 1``), text
    by text in order (``owner``: the text's index in ``batch``; ``targets``: the scored tokens' indices)."""
    hidden = hidden_rows(model, batch)
    ref_hidden = hidden_rows(reference, batch) if reference is not None else None
    targets = torch.cat([torch.arange(first, len(t)) for t, first in batch])
    owner = torch.cat([torch.full((len(t) - first,), b) for b, (t, first) in enumerate(batch)])
    token_ids = torch.cat([t[first:] for t, first in batch])
    rows = logit_rows(int(model.config.vocab_size))
    for a in range(0, hidden.shape[0], rows):
        logits = head_logits(model, hidden[a : a + rows])
        ref_logits = None if ref_hidden is None else head_logits(reference, ref_hidden[a : a + rows]).to(logits.device)
        yield owner[a : a + rows], targets[a : a + rows], token_ids[a : a + rows], logits, ref_logits
        del logits, ref_logits


def split_by_owner(parts: list[list[dict]], owner: torch.Tensor, part: dict) -> None:
    """Append each text's rows of ``part`` (``{column: [k] tensor}``) to ``parts[text]``."""
    for b in owner.unique().tolist():
        sel = owner == b
        parts[b].append({k: v[sel] for k, v in part.items()})


def score_batch(model, batch, warps: Warps, reference, row_block: int) -> list[list[dict]]:
    """The ``stats_rows`` parts of each text of ``batch`` (``(ids tensor, first scored)``, ``first >= 1``)."""
    distinct = reference if reference is not None and not warps.self_reference else None
    parts: list[list[dict]] = [[] for _ in batch]
    for owner, targets, tgt, logits, ref_logits in logit_blocks(model, batch, distinct):
        ref_logits = logits if warps.self_reference else ref_logits
        part = stats_rows(logits, tgt.to(logits.device), warps.warp, warps.warp is not None, row_block, ref_logits,
                          warps.ref_warp, warps.cross_warp)
        split_by_owner(parts, owner, part | {"target_index": targets, "token_id": tgt, "ctx_len": targets})
    return parts


def one_pass_fits(model, reference, n_tokens: int) -> bool:
    """Whether one forward pass over a text of ``n_tokens`` (a batch's longest) by ``model`` and a distinct
    ``reference`` fits in memory (``memory.check_scoring_fits``, the guard of ``score_ids``). Where it does not,
    ``score_many`` scores its texts alone in chunks of ``score.pass_tokens`` tokens, which hold less."""
    scorers = [model] + ([reference] if reference is not None else [])
    try:
        check_scoring_fits([(m.config, weight_bytes(m)) for m in scorers], n_tokens, n_tokens,
                           logit_rows(int(model.config.vocab_size)), model_device(model), error=ScoringMemoryError)
    except ScoringMemoryError:
        return False
    return True


def run_batch(score, batch):
    """``score(batch)`` (one result per text), split in two and retried where the batch runs out of memory
    (a single text that does: raised)."""
    try:
        return score(batch)
    except (RuntimeError, MemoryError) as err:
        if len(batch) == 1 or not out_of_memory(err):
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = len(batch) // 2
    return run_batch(score, batch[:half]) + run_batch(score, batch[half:])


@torch.no_grad()
def score_many(
    model,
    items,
    batch_size: int | None = None,
    sampling=None,
    eos_token_ids: list[int] | None = None,
    stride: int | None = None,
    max_context: int | None = None,
    reference=None,
    reference_sampling=None,
    cross_with: str = "raw",
    reference_eos_token_ids: list[int] | None = None,
    tokenizer=None,
    reference_tokenizer=None,
    chunk_size: int | None = None,
    row_block: int | None = None,
) -> list[pd.DataFrame]:
    """``score_ids`` of every ``(input_ids, first_scored)`` of ``items``, in order, scored in batches of texts
    (module docstring); the arguments as ``score_ids``'s, ``batch_size`` the texts per batch at most (None:
    the memory-based default; 1: one text at a time, as ``score_ids``)."""
    check_batch_size(batch_size)
    items = [(torch.as_tensor(list(ids), dtype=torch.long), int(first)) for ids, first in items]
    warps = Warps.of(model, sampling, eos_token_ids, reference, reference_sampling, cross_with,
                     reference_eos_token_ids, tokenizer, reference_tokenizer)
    max_context = min(max_context or context_window(model), warps.reference_context or 1 << 62)
    distinct_ref = reference is not None and not warps.self_reference
    batched = batch_size != 1 and head_matches(model) and (not distinct_ref or head_matches(reference))
    alone_kw = {"sampling": sampling, "eos_token_ids": eos_token_ids, "stride": stride, "max_context": max_context,
                "reference": reference, "reference_sampling": reference_sampling, "cross_with": cross_with,
                "reference_eos_token_ids": reference_eos_token_ids, "tokenizer": tokenizer,
                "reference_tokenizer": reference_tokenizer, "chunk_size": chunk_size, "row_block": row_block}
    out: list[pd.DataFrame | None] = [None] * len(items)
    together = []
    for i, (ids, first) in enumerate(items):
        if not 0 <= first <= len(ids):
            raise ScoringError(f"first_scored={first} outside the text of {len(ids)} tokens")
        if batched and len(ids) <= max_context and max(first, 1) < len(ids):
            together.append(i)
        else:  # windowed, empty, or a model scored through its own logits: alone
            out[i] = score_ids(model, ids.tolist(), first, **alone_kw)
    row_block = row_block or default_row_block(model)
    lengths = [len(items[i][0]) for i in together]
    if lengths and not one_pass_fits(model, reference if distinct_ref else None, max(lengths)):
        for i in together:  # each alone, in score_ids's chunks with the cache carried (its own memory guard)
            out[i] = score_ids(model, items[i][0].tolist(), items[i][1], **alone_kw)
        together, lengths = [], []
    for plan in plan_batches(lengths, batch_size, model):
        batch = [(items[together[j]][0], max(items[together[j]][1], 1)) for j in plan]
        scored = run_batch(lambda part: score_batch(model, part, warps, reference, row_block), batch)
        for j, parts in zip(plan, scored):
            i = together[j]
            out[i] = scored_frame(parts, items[i][1], samp=warps.warp is not None, cross=reference is not None)
        if input_device(model).type != "cuda":
            release_free_memory()
    return out


def score_text_many(model, tokenizer, texts: list[tuple[str, str]], batch_size: int | None = None,
                    stride: int | None = None) -> list[ScoredText]:
    """``score.score_text`` of every ``(continuation, prompt)`` of ``texts``, in order, in batches of texts
    (``score_many``). A text with nothing to score raises ``ScoringError`` naming it (``text 2: ...``)."""
    prepared = []
    for i, (continuation, prompt) in enumerate(texts):
        ids, first, n_bytes = tokenize_with_prompt(tokenizer, prompt, continuation)
        if first >= len(ids):
            raise ScoringError(f"text {i + 1}: nothing to score: the continuation is empty after tokenization")
        prepared.append((ids, first, n_bytes))
    frames = score_many(model, [(ids, first) for ids, first, _ in prepared], batch_size=batch_size,
                        eos_token_ids=eos_ids(tokenizer, model), stride=stride, tokenizer=tokenizer)
    return [scored_text(tokenizer, df, ids, first, n_bytes) for (ids, first, n_bytes), df in zip(prepared, frames)]
