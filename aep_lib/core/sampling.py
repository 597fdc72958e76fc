"""The sampling distribution ``q``: its settings, its variants, its warps, reproducible sampling.

``Sampling`` is the value object of the decoding warps (temperature, top-k, top-p, end-of-text rule).
A **variant** is a model with the warps it samples with, written
``<model>[@t<temperature>][k<top_k>][p<top_p>]`` (``gemma-3-270m@t0.7p0.9``; plain ``gemma-3-270m`` is
temperature 1, no truncation): ``Variant.parse``, ``parse_variants``, ``all_pairs``.

``SamplingWarp`` turns raw logits into the logits of ``q`` with transformers' own processors, in the
order ``generate()`` applies them: end-of-text suppression (``SuppressIds``, when ``on_eos="suppress"``),
then temperature, top-k, top-p. Temperature 0 is greedy: ``q`` is one-hot at the argmax. On the CPU
its top-p is ``SelectTopP``: the same tokens removed as transformers' ``TopPLogitsWarper`` (bit for
bit), without that warper's arg-sort of the whole vocabulary (100 ms per step at batch 16 here).

``gumbel_noise`` is counter-based: the noise of a sequence at step ``t`` is a function of
``(seed, t)`` alone, so a sequence samples the same tokens whichever other sequences share its batch
(Gumbel-max: ``argmax(log q + G)`` is a draw from ``q``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


class Strict(BaseModel):
    """A frozen pydantic model that refuses unknown keys (the base of every parameter schema)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class Sampling(Strict):
    """The decoding warps that turn the raw ``p`` into the sampling distribution ``q``.

    Applied in transformers' order: temperature, then top-k, then top-p. ``temperature=0`` means
    greedy; ``top_k=0`` and ``top_p=1`` mean no truncation. ``on_eos``: ``suppress`` forbids the
    end-of-text token (a warp, part of ``q``) so that runs reach their length; ``stop`` ends the
    run at EOS; ``continue`` samples through it.
    """

    temperature: float = Field(1.0, ge=0.0, le=100.0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    on_eos: Literal["suppress", "stop", "continue"] = "suppress"

    @property
    def label(self) -> str:
        return f"t{self.temperature:g}_k{self.top_k}_p{self.top_p:g}_eos-{self.on_eos}"

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    def as_dict(self) -> dict:
        return {"temperature": float(self.temperature), "top_k": int(self.top_k), "top_p": float(self.top_p),
                "on_eos": self.on_eos}


_VARIANT = re.compile(r"(?P<model>[^@\s]+)(@(?P<warps>[^@\s]*))?")


_WARPS = re.compile(r"(t(?P<t>\d+(\.\d+)?))?(k(?P<k>\d+))?(p(?P<p>\d*\.?\d+))?")


@dataclass(frozen=True)
class Variant:
    """A model and its decoding warps: what generates ``q_A``, or what scores with ``q_B``."""

    model: str
    sampling: Sampling

    @property
    def label(self) -> str:
        s, warps = self.sampling, ""
        if s.temperature != 1.0:
            warps += f"t{s.temperature:g}"
        if s.top_k:
            warps += f"k{s.top_k}"
        if s.top_p < 1.0:
            warps += f"p{s.top_p:g}"
        return self.model + (f"@{warps}" if warps else "")

    def __str__(self) -> str:
        return self.label

    @classmethod
    def parse(cls, spec: str, on_eos: str = "suppress") -> "Variant":
        """``"gemma-3-270m@t0.7p0.9"`` -> ``Variant("gemma-3-270m", Sampling(0.7, top_p=0.9))``."""
        m = _VARIANT.fullmatch(spec.strip())
        w = _WARPS.fullmatch(m.group("warps") or "") if m else None
        if m is None or w is None or (m.group("warps") == ""):
            raise ValueError(
                f"variant {spec!r}: expected <model>[@t<temperature>][k<top_k>][p<top_p>], "
                "e.g. 'gemma-3-270m' or 'gemma-3-270m@t0.7p0.9'"
            )
        sampling = Sampling(
            temperature=float(w.group("t")) if w.group("t") else 1.0,
            top_k=int(w.group("k")) if w.group("k") else 0,
            top_p=float(w.group("p")) if w.group("p") else 1.0,
            on_eos=on_eos,
        )
        return cls(m.group("model"), sampling)

    @classmethod
    def of_run(cls, row) -> "Variant":
        """The variant that generated a stored generation run (its model and warps)."""
        return cls(str(row["model"]), Sampling(temperature=float(row["temperature"]), top_k=int(row["top_k"]),
                                               top_p=float(row["top_p"]), on_eos=str(row["on_eos"])))


def parse_variants(specs, on_eos: str = "suppress") -> list[Variant]:
    """A comma-separated string (or list) of variant specs -> variants (duplicates dropped)."""
    items = [s.strip() for s in specs.split(",")] if isinstance(specs, str) else [str(s).strip() for s in specs]
    return list(dict.fromkeys(Variant.parse(s, on_eos) for s in items if s))


def all_pairs(variants: list[Variant], self_pairs: bool = True) -> list[tuple[Variant, Variant]]:
    """Every ordered pair (A generates, B scores): both directions, and each variant against itself."""
    return [(a, b) for a in variants for b in variants if self_pairs or a != b]


def pair_label(source: Variant | str, scorer: Variant | str) -> str:
    return f"{source} -> {scorer}"


class SelectTopP:
    """transformers' ``TopPLogitsWarper`` (``min_tokens_to_keep=1``) without its arg-sort of ``[rows, vocab]``
    on the CPU: the same tokens removed, bit for bit (``ties="sort"``).

    transformers sorts each row ascending, takes ``cumsum(softmax(sorted))`` and removes the tokens whose
    cumulative probability is ``<= 1 - top_p`` (a prefix of the sorted row; the last token always stays).
    Those numbers depend only on the sorted *values*, which numpy sorts (SIMD, no indices) 60x faster
    than torch's arg-sort here; the removed tokens are then those below the first kept value.

    Where the cut falls between equal values, which of them go depends on the order the arg-sort gives
    equal values (torch's sort is not stable, and the CUDA one orders them otherwise). ``ties="sort"``
    warps such a row with transformers' own warper (exact; float32 logits almost never tie there, 0 of
    512 SmolLM2 rows); ``ties="index"`` removes the tied tokens of lowest id first (a stable sort's
    order): the same number of tokens, so the same probabilities kept, on any device. bfloat16 logits
    tie at the cut in half the rows, where ``"sort"`` would sort them all; with ``"index"`` (the logits of a
    16-bit model) rows of bfloat16 numbers are sorted by counting (``sorted_bf16_rows``: the same values).
    Off the CPU (or for other dtypes) the warper is transformers' own.
    """

    def __init__(self, top_p: float, ties: Literal["sort", "index"] = "sort"):
        if ties not in ("sort", "index"):
            raise ValueError(f"ties must be 'sort' or 'index', got {ties!r}")
        self.top_p, self.ties = float(top_p), ties
        self.reference = TopPLogitsWarper(top_p=top_p)

    def __call__(self, input_ids, scores: torch.Tensor) -> torch.Tensor:
        if scores.device.type != "cpu" or scores.dtype != torch.float32 or scores.dim() != 2:
            return self.reference(input_ids, scores)
        ordered = sorted_bf16_rows(scores) if self.ties == "index" else None
        if ordered is None:
            ordered = torch.from_numpy(np.sort(scores.numpy(), axis=-1))
        removed = ordered.softmax(dim=-1).cumsum(dim=-1) <= (1 - self.top_p)
        removed[..., -1:] = False
        n_removed = removed.sum(-1, keepdim=True)  # the removed tokens are a prefix of the sorted row
        first_kept = ordered.gather(-1, n_removed.clamp(max=ordered.shape[-1] - 1))
        last_removed = ordered.gather(-1, (n_removed - 1).clamp(min=0))
        cut = torch.where(n_removed > 0, first_kept, torch.full_like(first_kept, float("-inf")))
        drop = scores < cut
        tied = torch.nonzero(((n_removed > 0) & (last_removed == first_kept)).squeeze(-1)).flatten()
        if len(tied) and self.ties == "index":
            at_cut = scores[tied] == first_kept[tied]
            n_tied_removed = n_removed[tied] - drop[tied].sum(-1, keepdim=True)
            drop[tied] |= at_cut & (at_cut.cumsum(-1) <= n_tied_removed)
        out = scores.masked_fill(drop, float("-inf"))
        if self.ties == "sort":
            for row in tied.tolist():
                out[row] = self.reference(input_ids[row : row + 1], scores[row : row + 1])[0]
        return out


def _bf16_by_order() -> np.ndarray:
    """The 65,536 bfloat16 numbers as float32, in the order of ``sorted_bf16_rows``' keys (ascending)."""
    keys = torch.arange(65536, dtype=torch.int32)
    bits = torch.where(keys >= 32768, keys - 32768, -1 - keys).to(torch.int16)
    return bits.view(torch.bfloat16).float().numpy()


BF16_BY_ORDER = _bf16_by_order()


def sorted_bf16_rows(scores: torch.Tensor) -> torch.Tensor | None:
    """Each row of ``[rows, vocab]`` float32 ``scores`` sorted ascending, by counting, when every value is a
    bfloat16 number (the logits of a bfloat16 model, as they are, top-k'd or with tokens at ``-inf``);
    else None. The same values as ``np.sort``: 5 ms instead of 17 for 16 SmolLM2 rows here.

    A bfloat16's 16 bits, read as a signed integer ``b``, order the numbers as ``b + 32768`` for ``b >= 0``
    and ``-1 - b`` for ``b < 0`` (the negative numbers run backwards); a histogram of those keys per row
    and the numbers repeated by their counts are the sorted row.
    """
    as_bf16 = scores.bfloat16()
    if not torch.equal(as_bf16.float(), scores):  # (also False with a NaN)
        return None
    rows, vocab = scores.shape
    b = as_bf16.view(torch.int16).to(torch.int32)
    keys = (b ^ ((b >> 15) & 0x7FFF)) + (torch.arange(rows, dtype=torch.int32).unsqueeze(-1) * 65536 + 32768)
    counts = torch.bincount(keys.flatten(), minlength=rows * 65536).numpy()
    return torch.from_numpy(np.repeat(np.tile(BF16_BY_ORDER, rows), counts).reshape(rows, vocab))


class SuppressIds:
    """A logits processor that sets the scores of ``ids`` to ``-inf``: the scores transformers'
    ``SuppressTokensLogitsProcessor`` gives (ids past the vocabulary ignored, as there), without its
    membership test over the whole vocabulary at every call (1.7 ms per Gemma row block here)."""

    def __init__(self, ids):
        self.ids = sorted({int(i) for i in ids})

    def __call__(self, input_ids, scores: torch.Tensor) -> torch.Tensor:
        ids = [i for i in self.ids if 0 <= i < scores.shape[-1]]
        return scores.index_fill(-1, torch.tensor(ids, dtype=torch.long, device=scores.device), float("-inf"))


class SamplingWarp:
    """Callable ``[rows, vocab]`` raw logits -> ``[rows, vocab]`` float32 logits of ``q`` (``-inf`` = excluded).

    ``top_p_by="select"`` (default) removes the top-p tail with ``SelectTopP`` (``top_p_ties``: how it
    breaks ties at the cut), ``"sort"`` with transformers' ``TopPLogitsWarper``: the same logits, the
    second 25x slower on a CPU.
    """

    def __init__(self, sampling: Sampling, eos_token_ids: list[int] | None = None,
                 top_p_by: Literal["select", "sort"] = "select", top_p_ties: Literal["sort", "index"] = "sort"):
        if top_p_by not in ("select", "sort"):
            raise ValueError(f"top_p_by must be 'select' or 'sort', got {top_p_by!r}")
        self.sampling = sampling
        processors = LogitsProcessorList()
        if sampling.on_eos == "suppress" and eos_token_ids:
            processors.append(SuppressIds(eos_token_ids))
        if not sampling.greedy:
            if sampling.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_k > 0:
                processors.append(TopKLogitsWarper(top_k=sampling.top_k))
            if sampling.top_p < 1.0:
                processors.append(SelectTopP(sampling.top_p, top_p_ties) if top_p_by == "select"
                                  else TopPLogitsWarper(top_p=sampling.top_p))
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


class RowWarps:
    """The warps of a batch whose rows may sample differently: ``samplings[i]`` warps row ``i``.

    Each distinct ``Sampling`` is one ``SamplingWarp`` applied to its rows alone; every warp works row by
    row, so a row's ``q`` is the same in any batch (bit for bit). One generation batch can then hold runs at
    several settings (temperature 1 and top-p of one model): a decoding step costs nearly as much for 4 rows
    as for 8 on a CPU (docs/engine.md), so fewer, fuller batches finish sooner. ``uniform``: the one
    ``SamplingWarp`` when every row samples alike (or ``samplings`` is one ``Sampling``), else None.
    """

    def __init__(self, samplings: Sampling | list[Sampling], eos_token_ids: list[int] | None = None,
                 top_p_by: Literal["select", "sort"] = "select", top_p_ties: Literal["sort", "index"] = "sort"):
        self.samplings = [samplings] if isinstance(samplings, Sampling) else list(samplings)
        distinct = list(dict.fromkeys(self.samplings))
        self.warps = {s: SamplingWarp(s, eos_token_ids, top_p_by, top_p_ties) for s in distinct}
        self.rows = {s: torch.tensor([i for i, r in enumerate(self.samplings) if r == s]) for s in distinct}
        self.uniform = self.warps[distinct[0]] if len(distinct) == 1 else None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.uniform is not None:
            return self.uniform(logits)
        out = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
        for sampling, warp in self.warps.items():
            rows = self.rows[sampling].to(logits.device)
            out[rows] = warp(logits[rows])
        return out


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
