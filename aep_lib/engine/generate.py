"""Batched generation with per-token statistics under the raw ``p`` and the sampling ``q``.

Our own decoding loop over a KV cache: every step computes ``[batch, vocab]`` float32 logits once,
reduces them to a few numbers per sequence (docs/science.md) and drops them, so memory grows with
batch × length (the cache and the per-token rows), never with length × vocabulary.

Sequences in one batch may have different prompts (left padding with an attention mask and
explicit position ids), seeds and sampling settings (``core.sampling.RowWarps``); each samples with its
own counter-based noise, so its tokens do not depend on its batch-mates.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..core.columns import RAW, SAMP, from_stats, generated_columns
from ..core.sampling import RowWarps, Sampling, eos_ids
from .memory import check_generation_fits, model_device, release_free_memory, weight_bytes
from .models import cache_kwargs, input_device, new_cache
from .static_decode import CompiledDecoder, StaticDecoder, StepwiseDecoder, cache_slots, choose_engine

# Steps between two ``release_free_memory`` calls on CPU (0: never): the pages the steps freed go back to
# the system, so that the heap does not grow with the length of the run.
TRIM_EVERY = int(os.environ.get("AEP_TRIM_EVERY", "16"))

TOKEN_COLUMNS = generated_columns()  # the columns of Generation.tokens, in order (core.columns)


@dataclass
class Generation:
    """One generated continuation and its per-token statistics (``tokens``: one row per token)."""

    prompt: str
    seed: int
    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    stop_reason: str  # "length" | "eos"
    tokens: pd.DataFrame
    elapsed_s: float = 0.0
    extra: dict = field(default_factory=dict)


def left_pad(batch_ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[batch, max_len]`` ids and attention mask, padded on the left."""
    width = max(len(ids) for ids in batch_ids)
    input_ids = torch.full((len(batch_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
    for i, ids in enumerate(batch_ids):
        input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        mask[i, width - len(ids) :] = 1
    return input_ids, mask


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if not ids:
        raise ValueError("empty prompt and the tokenizer adds no BOS token: nothing to condition on")
    return list(ids)


class EagerDecoder(StepwiseDecoder):
    """The reference engine: transformers' ``DynamicCache`` and warpers (top-p by arg-sort), one pass of
    the statistics over the whole batch."""

    def __init__(self, model, samplings, eos, batch: int, n_positions: int, width: int = 1):
        self.model, self.device = model, input_device(model)
        self.ckw = cache_kwargs(model, new_cache(model))
        self.warp = RowWarps(samplings, eos, top_p_by="sort")


DECODERS = {"eager": EagerDecoder, "static": StaticDecoder, "compiled": CompiledDecoder}


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    seeds: list[int],
    sampling: Sampling | list[Sampling],
    max_new_tokens: int,
    record_topk: int = 0,
    progress: bool = True,
    engine: str = "auto",
) -> list[Generation]:
    """Generate one continuation per ``(prompts[i], seeds[i])``, all in one batch.

    Records per generated token the columns ``TOKEN_COLUMNS`` (``core.columns.generated_columns``): the
    token id and text, ``ctx_len`` (tokens conditioned on), the statistics under ``p`` (``_raw``: surprisal,
    entropy, varentropy in bits, ``rank_raw``, ``greedy_id``) and under ``q`` (``_samp``). With
    ``record_topk=k`` also the ``k`` most probable ids and probabilities of ``p`` (``topk_ids``, ``topk_probs``).
    ``sampling``: one ``Sampling`` for every sequence, or one per sequence (``core.sampling.RowWarps``; the
    ``compiled`` engine takes one for all). Stops at ``max_new_tokens``, or at EOS for a sequence whose
    sampling has ``on_eos == "stop"``.

    ``engine``: ``eager`` (transformers' dynamic cache and warpers: the reference), ``static`` (a
    pre-allocated cache; the same tokens, the statistics bit for bit or to float64 rounding, faster),
    ``compiled`` (a static cache and a ``torch.compile``d step; equal up to float rounding) or ``auto``
    (see ``static_decode.choose_engine``). ``Generation.extra["engine"]`` says which ran.

    Before anything is allocated, one sequence's KV cache (the slots the engine allocates) and step
    temporaries must fit in the memory the process can get (``memory.check_generation_fits``): else
    ``memory.MemoryEstimateError`` naming the longest ``max_new_tokens`` that fits.
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    samplings = [sampling] * len(prompts) if isinstance(sampling, Sampling) else list(sampling)
    if len(samplings) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(samplings)} samplings: give one Sampling, or one per prompt")
    engine = choose_engine(engine, model)
    if engine == "compiled" and len(set(samplings)) > 1:
        raise ValueError("engine='compiled' samples a whole batch one way: give one Sampling, or use engine='static'")
    batch = len(prompts)
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    eos = eos_ids(tokenizer, model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)

    input_ids, mask = left_pad(prompt_ids, pad_id)
    width = input_ids.shape[1]
    check_generation_fits(model.config, weight_bytes(model), width + max_new_tokens, width, model_device(model),
                          slots=lambda n: cache_slots(engine, n))
    decoder = DECODERS[engine](model, samplings, eos, batch, input_ids.shape[1] + max_new_tokens, input_ids.shape[1])
    device = decoder.device
    input_ids, mask = input_ids.to(device), mask.to(device)
    start = time.perf_counter()
    decoder.start(input_ids, mask, (mask.cumsum(-1) - 1).clamp(min=0))
    ctx_len = torch.tensor([len(p) for p in prompt_ids])

    columns: dict[str, list] = {c: [] for c in TOKEN_COLUMNS if c != "token_text"}
    topk_ids, topk_probs = [], []
    active = torch.ones(batch, dtype=torch.bool)
    stop_reason = ["length"] * batch
    eos_tensor = torch.tensor(eos, dtype=torch.long)
    stops_at_eos = torch.tensor([s.on_eos == "stop" for s in samplings], dtype=torch.bool)
    steps = tqdm(range(max_new_tokens), disable=not progress, unit="tok", desc=f"generate x{batch}",
                 leave=False, mininterval=1.0)
    for step in steps:
        tokens, raw, samp, logits = decoder.draw(seeds, step)
        _record_step(columns, step, tokens, raw, samp, ctx_len + step, active)
        if record_topk:
            probs, ids = torch.softmax(logits, -1).topk(record_topk, dim=-1)
            topk_ids.append(ids.cpu())
            topk_probs.append(probs.cpu())

        if eos and stops_at_eos.any():
            hit = torch.isin(tokens.cpu(), eos_tensor) & active & stops_at_eos
            for i in torch.nonzero(hit).flatten().tolist():
                stop_reason[i] = "eos"
            active &= ~hit
            if not active.any():
                break
        if step == max_new_tokens - 1:
            break
        if TRIM_EVERY and step % TRIM_EVERY == TRIM_EVERY - 1 and device.type == "cpu":
            release_free_memory()
        feed = torch.where(active.to(device), tokens.to(device), torch.full_like(tokens, pad_id, device=device))
        decoder.advance(feed, active)
        if progress:
            steps.set_postfix(tok_s=f"{batch * (step + 1) / (time.perf_counter() - start):.1f}")
    elapsed = time.perf_counter() - start

    results = _generations(tokenizer, prompts, seeds, prompt_ids, columns, topk_ids, topk_probs, record_topk,
                           stop_reason, elapsed)
    for result in results:
        result.extra["engine"] = engine
        if engine == "compiled":
            result.extra["compile_s"] = decoder.compile_s
    return results


def _record_step(columns, step: int, tokens, raw, samp, ctx_len, active) -> None:
    """Append one step's ``[batch]`` values (on the CPU) to the per-column lists: ``raw`` and ``samp`` are
    ``stats.token_stats`` results under ``p`` and ``q``."""
    step_columns = {"position": torch.full(tokens.shape, step), "token_id": tokens, "ctx_len": ctx_len}
    for name, values in (step_columns | from_stats(raw, RAW) | from_stats(samp, SAMP)).items():
        columns[name].append(values.cpu())
    columns.setdefault("_active", []).append(active.clone())


def _generations(tokenizer, prompts, seeds, prompt_ids, columns, topk_ids, topk_probs, record_topk, stop_reason,
                 elapsed) -> list[Generation]:
    """The per-sequence results of a batch from the per-step columns (``[batch]`` tensors per step)."""
    batch = len(prompts)
    stacked = {name: torch.stack(vals, dim=1) for name, vals in columns.items()}  # [batch, steps]
    results = []
    for i in range(batch):
        keep = stacked["_active"][i]
        frame = {name: stacked[name][i][keep].numpy() for name in columns if name != "_active"}
        token_ids = frame["token_id"].tolist()
        frame["token_text"] = [tokenizer.decode([t]) for t in token_ids]
        df = pd.DataFrame({c: frame[c] for c in TOKEN_COLUMNS})
        if record_topk:
            ids_i = torch.stack(topk_ids, 1)[i][keep]
            probs_i = torch.stack(topk_probs, 1)[i][keep]
            df["topk_ids"] = [row.tolist() for row in ids_i]
            df["topk_probs"] = [row.tolist() for row in probs_i]
        results.append(
            Generation(
                prompt=prompts[i], seed=int(seeds[i]), prompt_ids=prompt_ids[i], token_ids=token_ids,
                text=tokenizer.decode(token_ids, skip_special_tokens=True), stop_reason=stop_reason[i],
                tokens=df, elapsed_s=elapsed,
            )
        )
    return results
