"""The sampling distribution ``q`` and reproducible, batch-independent sampling.

``SamplingWarp`` turns raw logits into the logits of ``q`` with transformers' own processors, in the
order ``generate()`` applies them: end-of-text suppression (a processor, when ``on_eos="suppress"``),
then temperature, top-k, top-p. Temperature 0 is greedy: ``q`` is one-hot at the argmax.

``gumbel_noise`` is counter-based: the noise of a sequence at step ``t`` is a function of
``(seed, t)`` alone, so a sequence samples the same tokens whichever other sequences share its batch
(Gumbel-max: ``argmax(log q + G)`` is a draw from ``q``).
"""

from __future__ import annotations

import hashlib

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .params import Sampling


class SamplingWarp:
    """Callable ``[rows, vocab]`` raw logits -> ``[rows, vocab]`` float32 logits of ``q`` (``-inf`` = excluded)."""

    def __init__(self, sampling: Sampling, eos_token_ids: list[int] | None = None):
        self.sampling = sampling
        processors = LogitsProcessorList()
        if sampling.on_eos == "suppress" and eos_token_ids:
            processors.append(SuppressTokensLogitsProcessor(sorted(set(eos_token_ids))))
        if not sampling.greedy:
            if sampling.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_k > 0:
                processors.append(TopKLogitsWarper(top_k=sampling.top_k))
            if sampling.top_p < 1.0:
                processors.append(TopPLogitsWarper(top_p=sampling.top_p))
        self.processors = processors

    @property
    def is_identity(self) -> bool:
        """True when ``q == p`` (nothing to warp)."""
        return not self.processors and not self.sampling.greedy

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        scores = logits.float()
        if self.processors:
            dummy_ids = torch.zeros((scores.shape[0], 1), dtype=torch.long, device=scores.device)
            scores = self.processors(dummy_ids, scores)
        if self.sampling.greedy:
            keep = scores.argmax(-1, keepdim=True)
            one_hot = torch.full_like(scores, float("-inf"))
            scores = one_hot.scatter(-1, keep, 0.0)
        return scores


def eos_ids(tokenizer, model=None) -> list[int]:
    """The end-of-text ids of a tokenizer (and the model's generation config, if given)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    cfg = getattr(model, "generation_config", None)
    extra = getattr(cfg, "eos_token_id", None) if cfg is not None else None
    if isinstance(extra, int):
        ids.add(extra)
    elif isinstance(extra, (list, tuple)):
        ids.update(int(i) for i in extra)
    return sorted(ids)


def _stream_seed(seed: int, step: int) -> int:
    digest = hashlib.blake2b(f"aep:{int(seed)}:{int(step)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def gumbel_noise(seeds: list[int], step: int, vocab_size: int, device="cpu") -> torch.Tensor:
    """``[len(seeds), vocab]`` float32 standard Gumbel noise; row ``i`` depends only on ``(seeds[i], step)``.

    Made on ``device`` with that device's generator: on CUDA the noise (and so the text) differs from
    the CPU's for the same seed, but stays batch-independent and reproducible on that device; making
    it on the CPU and copying it over cost more than the model's step at batch 32 (8B on an H100).
    """
    device = torch.device(device)
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    rows = []
    for seed in seeds:
        gen = torch.Generator(device=gen_device).manual_seed(_stream_seed(seed, step))
        u = torch.rand(vocab_size, generator=gen, dtype=torch.float32, device=gen_device).clamp_(min=1e-30)
        rows.append(u.log_().neg_().log_().neg_())
    return torch.stack(rows).to(device=device)


def sample(q_logits: torch.Tensor, seeds: list[int], step: int) -> torch.Tensor:
    """``[rows]`` int64 tokens drawn from ``q`` by Gumbel-max with the counter-based noise."""
    noise = gumbel_noise(seeds, step, q_logits.shape[-1], device=q_logits.device)
    return (torch.log_softmax(q_logits.float(), -1) + noise).argmax(-1)
