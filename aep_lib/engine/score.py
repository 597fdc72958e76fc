"""Teacher-forced scoring: the per-token statistics of a given text under a model.

The text is fed in chunks with the KV cache carried between them (exact), so peak memory holds one
chunk's ``[chunk, vocab]`` logits, never the whole text's. Positions before ``first_scored`` (the
prompt, the "source") are context only. Beyond the model's context window a sliding window with a
stride is used and each position records its ``ctx_len``.

``score_ids`` scores token ids (a stored generation re-scored under its own model and warps gives
back the statistics recorded while generating). ``score_text`` tokenizes ``prompt + continuation``
and scores exactly the tokens whose character span starts at or after the end of the prompt.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass

import pandas as pd
import torch

from ..core.columns import scorer_columns
from ..core.sampling import Sampling, SamplingWarp, eos_ids
from .memory import MemoryEstimateError, check_scoring_fits, model_device, release_free_memory, weight_bytes
from .models import cache_kwargs, input_device, new_cache
from .score_rows import head_logits, head_matches, logit_rows, stats_row_block, stats_rows
from .spans import ScoringError, tokenize_with_prompt


class ScoringMemoryError(ScoringError, MemoryEstimateError):
    """The text's scoring does not fit in memory (``memory.check_scoring_fits``), refused before it starts."""


@dataclass
class ScoredText:
    tokens: pd.DataFrame  # one row per scored token
    input_ids: list[int]  # the whole tokenized text, prompt included
    first_scored: int  # index in input_ids of the first scored token
    n_bytes: int  # UTF-8 bytes of the scored character span (for bits per byte)
    bits_per_byte: float


def context_window(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 2048)


def sliding_windows(n: int, first_scored: int, max_context: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, first_target, end)`` of each window: feed ``ids[begin:end-1]``, score targets
    ``first_target..end-1``; every target from ``max(first_scored, 1)`` on is scored exactly once.

    The first window is ``[0, min(max_context, n))``. Each next one ends ``step = min(stride,
    max_context - 1)`` tokens later and starts ``max_context`` tokens before its end, so that its first
    new target has ``max_context - step`` tokens of context (at least 1: a stride equal to the context
    window overlaps windows by one token, where a window starting at the previous one's end left that
    token unscored). ``n / step`` windows of ``max_context`` tokens: time linear in ``n``.
    """
    step = min(stride, max_context - 1)
    done = max(first_scored, 1)
    windows, end = [], 0
    while end < n:
        end = min(n, max_context if end == 0 else end + step)
        begin = max(0, end - max_context)
        if end > done:
            windows.append((begin, max(done, begin + 1), end))
            done = end
    return windows


CPU_PASS_TOKENS = 8192  # tokens fed per forward pass on a CPU (one pass per window of SmolLM2 or Gemma's 8,192)
GPU_PASS_TOKENS = 2048
LOGITS_PASS_TOKENS = 256  # the same for a model scored through its own logits (``score_rows.head_matches`` false)


def pass_tokens(model) -> int:
    """Default tokens per forward pass (``chunk_size``). A pass that computes logits only for its scored rows
    (``score_rows``) holds ``[tokens, hidden]`` activations, not ``[tokens, vocab]`` logits: on a CPU a whole
    8,192-token window in one pass was 1.3x faster than 256-token chunks with the cache carried (attention
    over the cache, the cache's copies) and held less; a model scored through its own logits keeps 256."""
    if input_device(model).type == "cuda":
        return GPU_PASS_TOKENS
    return CPU_PASS_TOKENS if head_matches(model) else LOGITS_PASS_TOKENS


def forward_spans(model, ids: torch.Tensor, first_scored: int, chunk_size: int | None, max_context: int, stride):
    """Yield ``(targets_index [k], logits [k, vocab], ctx_len [k])`` for every scored position, in order,
    each exactly once.

    Within ``max_context``: one pass in chunks of ``chunk_size`` tokens (default ``pass_tokens``) with the
    cache carried. Beyond: ``sliding_windows`` of ``max_context`` tokens, a fresh cache each (memory
    bounded by one window's cache and one chunk's activations), ``ctx_len`` counting the window's tokens
    before the target. The logits of a chunk come in blocks of ``score_rows.logit_rows`` scored rows,
    computed from the base model's hidden states where ``score_rows.head_matches``. A window whose cache
    and logits do not fit in memory raises ``ScoringMemoryError`` before the first forward pass.
    """
    n = ids.shape[0]
    check_window(model, n, max_context, stride)
    chunk_size = chunk_size or pass_tokens(model)
    hidden_path = head_matches(model)  # else the model's own logits, in the same blocks
    rows = logit_rows(int(model.config.vocab_size))
    check_scoring_fits([(model.config, weight_bytes(model))], n, min(n, max_context), held_rows(model, chunk_size),
                       model_device(model), error=ScoringMemoryError, pass_tokens=chunk_size)
    device = input_device(model)
    for begin, first_target, end in sliding_windows(n, first_scored, max_context, stride or max_context):
        one_pass = end - 1 - begin <= chunk_size
        ckw = {"use_cache": False} if one_pass else {"use_cache": True, **cache_kwargs(model, new_cache(model))}
        for a in range(begin, end - 1, chunk_size):
            b = min(a + chunk_size, end - 1)  # feed ids[a:b]; outputs predict targets a+1..b
            keep = b - max(a + 1, first_target) + 1  # targets from first_target on come from the last `keep`
            chunk = ids[a:b].unsqueeze(0).to(device)
            pos = torch.arange(a - begin, b - begin, device=device).unsqueeze(0)
            if hidden_path:
                out = model.base_model(input_ids=chunk, position_ids=pos, **ckw).last_hidden_state[0]
            else:  # the model's own logits of the scored rows
                out = model(input_ids=chunk, position_ids=pos, logits_to_keep=max(keep, 1), **ckw).logits[0]
            for r in range(0, keep, rows):
                block = out[out.shape[0] - keep + r : out.shape[0] - keep + min(r + rows, keep)]
                targets = torch.arange(b + 1 - keep + r, b + 1 - keep + r + block.shape[0])
                yield targets, head_logits(model, block) if hidden_path else block, targets - begin
            del out  # not alive beside the next chunk's (logits: 256 MiB each for Gemma on CPU)
        del ckw  # the window's cache, freed before the next window's


def default_row_block(model) -> int:
    """Rows per block of the statistics: ``stats_row_block``'s, 16 times that on a GPU (big launches)."""
    return stats_row_block(int(model.config.vocab_size)) * (16 if input_device(model).type == "cuda" else 1)


def held_rows(model, chunk_size: int) -> int:
    """Rows of ``[rows, vocab]`` logits a pass of ``chunk_size`` tokens holds at once (``memory.scoring_bytes``)."""
    return min(chunk_size, logit_rows(int(model.config.vocab_size))) if head_matches(model) else chunk_size


def check_window(model, n: int, max_context: int, stride) -> None:
    """``ScoringError`` for a text of ``n`` tokens beyond ``max_context`` without a stride, a stride outside
    ``1..max_context``, or a context window too short to condition on anything."""
    if n > max_context and not stride:
        raise ScoringError(
            f"text of {n} tokens is longer than the model's context window ({max_context}): pass --stride <tokens> "
            f"on the command line (stride=<tokens> to score_ids or score_text), from 1 to {max_context}, to score "
            "it with a sliding window"
        )
    if stride and not 0 < stride <= max_context:
        raise ScoringError(f"stride must be between 1 and the context window ({max_context}), got {stride}")
    if max_context < 2:
        raise ScoringError(f"a context window of {max_context} token(s) leaves no token to condition on")


@dataclass
class Warps:
    """What a scoring pass applies to the logits: this model's ``warp`` (its ``q``; None without a sampling),
    the reference's ``ref_warp``, the ``cross_warp`` the cross statistics compare against (None: the raw
    ``p``), whether the reference is the scorer itself, and a distinct reference's context window."""

    warp: SamplingWarp | None
    ref_warp: SamplingWarp
    cross_warp: SamplingWarp | None
    self_reference: bool
    reference_context: int | None

    @classmethod
    def of(cls, model, sampling, eos_token_ids, reference, reference_sampling, cross_with, reference_eos_token_ids,
           tokenizer, reference_tokenizer) -> Warps:
        """The warps of ``score_ids``'s arguments, checked (``ScoringError``); a distinct reference must share the
        model's vocabulary (``check_same_vocabulary``)."""
        warp = SamplingWarp(sampling, eos_token_ids) if sampling is not None else None
        ref_eos = eos_token_ids if reference_eos_token_ids is None else reference_eos_token_ids
        ref_warp = SamplingWarp(reference_sampling or Sampling(on_eos="continue"), ref_eos)
        if cross_with not in ("raw", "samp"):
            raise ScoringError(f"cross_with must be 'raw' or 'samp', got {cross_with!r}")
        if cross_with == "samp" and warp is None:
            raise ScoringError("cross_with='samp' compares against this model's sampling distribution: pass sampling=")
        if isinstance(reference, str) and reference != "self":
            raise ScoringError(f"reference must be a model or 'self', got {reference!r}")
        self_reference = reference is model or (isinstance(reference, str) and reference == "self")
        reference_context = None
        if reference is not None and not self_reference:
            check_same_vocabulary(model, reference, tokenizer, reference_tokenizer)
            reference_context = context_window(reference)
        return cls(warp, ref_warp, warp if cross_with == "samp" else None, self_reference, reference_context)


@torch.no_grad()
def score_ids(
    model,
    input_ids,
    first_scored: int,
    sampling: Sampling | None = None,
    eos_token_ids: list[int] | None = None,
    chunk_size: int | None = None,
    max_context: int | None = None,
    stride: int | None = None,
    row_block: int | None = None,
    reference=None,
    reference_sampling: Sampling | None = None,
    cross_with: str = "raw",
    reference_eos_token_ids: list[int] | None = None,
    tokenizer=None,
    reference_tokenizer=None,
) -> pd.DataFrame:
    """Per-token statistics of ``input_ids[first_scored:]`` given everything before.

    Columns (``core.columns.scorer_columns``): ``position`` (0 = first scored token), the ``_raw``
    statistics with ``rank_raw``/``greedy_id``, with ``sampling`` the ``_samp`` statistics under that ``q``,
    with a ``reference`` the cross statistics, then ``token_id`` and ``ctx_len``.
    With a ``reference`` model on the same vocabulary (the joint pass of docs/science.md), also
    ``entropy_ref``, ``cross_entropy``, ``cross_varentropy`` and ``kl`` of the reference's ``q_A``
    (its raw ``p_A`` warped by ``reference_sampling``) against this model's ``p``.

    ``reference="self"`` (or the scoring model itself): A and B are one network with different warps,
    ``q_A = warp_A(p)`` and ``p_B = p`` from ONE forward pass. ``cross_with="samp"`` compares ``q_A``
    with this model's sampling distribution ``q_B = warp(p)`` (needs ``sampling``) instead of its raw
    ``p``: then ``surprisal_samp``, ``cross_entropy`` and ``cross_varentropy`` give ``z^(A,B)`` of a
    scorer that is itself a decoding variant. ``reference_eos_token_ids``: the end-of-text ids of the
    reference's warps (default ``eos_token_ids``). ``tokenizer``/``reference_tokenizer``: for the check
    that the two share one vocabulary (``check_same_vocabulary``; default the models' own).

    Before the first forward pass, one pass's activations, one window's KV cache where the window takes several
    passes, and one block of logits (of both models) must fit in
    the memory the process can get (``memory.check_scoring_fits``): else ``ScoringMemoryError`` naming the
    longest window that fits.
    """
    ids = torch.as_tensor(list(input_ids), dtype=torch.long)
    on_gpu = input_device(model).type == "cuda"
    # a GPU wants big launches (chunk 256 gave 7% of the bf16 roofline on an H100, 2,048 several times more)
    chunk_size = chunk_size or pass_tokens(model)
    row_block = row_block or default_row_block(model)
    if not 0 <= first_scored <= len(ids):
        raise ScoringError(f"first_scored={first_scored} outside the text of {len(ids)} tokens")
    warps = Warps.of(model, sampling, eos_token_ids, reference, reference_sampling, cross_with,
                     reference_eos_token_ids, tokenizer, reference_tokenizer)
    warp, ref_warp, cross_warp, self_reference = warps.warp, warps.ref_warp, warps.cross_warp, warps.self_reference
    max_context = min(max_context or context_window(model), warps.reference_context or 1 << 62)
    ref_spans = (
        forward_spans(reference, ids, first_scored, chunk_size, max_context, stride)
        if reference is not None and not self_reference else None
    )
    if len(ids) <= max_context or stride:
        scorers = [model] + ([reference] if reference is not None and not self_reference else [])
        check_scoring_fits([(m.config, weight_bytes(m)) for m in scorers], len(ids), min(len(ids), max_context),
                           max(held_rows(m, chunk_size) for m in scorers), model_device(model),
                           error=ScoringMemoryError, pass_tokens=chunk_size)
    parts = []
    for targets, logits, ctx in forward_spans(model, ids, first_scored, chunk_size, max_context, stride):
        tgt_ids = ids[targets].to(logits.device)
        ref_logits = None
        if self_reference:
            ref_logits = logits
        elif ref_spans is not None:
            _, ref_logits, _ = next(ref_spans)
        part = stats_rows(logits, tgt_ids, warp, warp is not None, row_block, ref_logits, ref_warp, cross_warp)
        part |= {"target_index": targets, "token_id": ids[targets], "ctx_len": ctx}
        parts.append(part)
        del logits, ref_logits  # freed before the next chunk's forward pass, not after it
        if not on_gpu:
            # glibc kept the freed blocks of each chunk (the growing attention and cache temporaries) and
            # could not reuse them for the next, larger ones: 8,191 SmolLM2 tokens in one window peaked
            # 1.39 GiB above the model, 0.43 with this (the cache itself is 0.35), at the same speed
            release_free_memory()
    return scored_frame(parts, first_scored, samp=warp is not None, cross=reference is not None)


def scored_frame(parts: list[dict], first_scored: int, samp: bool, cross: bool) -> pd.DataFrame:
    """The per-token table of ``score_ids`` from its parts (``stats_rows`` columns with ``target_index``,
    ``token_id`` and ``ctx_len``, in order)."""
    if not parts:
        return pd.DataFrame(columns=["position", "token_id", "ctx_len", "surprisal_raw"])
    frame = {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}
    frame["position"] = frame.pop("target_index") - max(first_scored, 1)
    return pd.DataFrame({c: frame[c] for c in scorer_columns(samp=samp, cross=cross)})


VOCABULARY_DIGESTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def vocabulary_digest(tokenizer) -> str:
    """A digest of a tokenizer's token-to-id map (``get_vocab()``, added tokens included): equal digests,
    equal maps. Computed once per tokenizer object (a 262k vocabulary takes ~0.2 s)."""
    try:
        return VOCABULARY_DIGESTS[tokenizer]
    except (KeyError, TypeError):
        pass
    h = hashlib.blake2b(digest_size=16)
    for token, index in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]):
        h.update(f"{index}\t{token}\n".encode("utf-8", "surrogatepass"))
    digest = h.hexdigest()
    try:
        VOCABULARY_DIGESTS[tokenizer] = digest
    except TypeError:  # an object that cannot be weakly referenced: not cached
        pass
    return digest


def check_same_vocabulary(a, b, tokenizer_a=None, tokenizer_b=None) -> None:
    """Raise ``ScoringError`` unless two models share one token-to-id map: the same vocabulary size, and
    the same tokens at the same ids (``get_vocab()``, compared through ``vocabulary_digest``, so once per
    tokenizer). The tokenizers default to the ones ``load_model`` attached (``model.aep_tokenizer``);
    when neither is known, only the sizes can be compared."""
    va, vb = int(a.config.vocab_size), int(b.config.vocab_size)
    if va != vb:
        raise ScoringError(
            f"vocabulary mismatch: {va} vs {vb} tokens; cross-entropy h^(A,B) needs one shared vocabulary "
            "(compare models with different tokenizers by their own l, h, z and bits per byte)"
        )
    tokenizer_a = tokenizer_a if tokenizer_a is not None else getattr(a, "aep_tokenizer", None)
    tokenizer_b = tokenizer_b if tokenizer_b is not None else getattr(b, "aep_tokenizer", None)
    if tokenizer_a is None or tokenizer_b is None or tokenizer_a is tokenizer_b:
        return
    if vocabulary_digest(tokenizer_a) != vocabulary_digest(tokenizer_b):
        raise ScoringError(
            f"vocabulary mismatch: the two tokenizers map tokens to ids differently ({first_difference(tokenizer_a, tokenizer_b)}); "
            "cross-entropy h^(A,B) needs one shared vocabulary (compare them by their own l, h, z and bits per byte)"
        )


def first_difference(tokenizer_a, tokenizer_b) -> str:
    """The first id at which two tokenizers' vocabularies differ, said in words."""
    by_id_a = {i: t for t, i in tokenizer_a.get_vocab().items()}
    by_id_b = {i: t for t, i in tokenizer_b.get_vocab().items()}
    for i in sorted(set(by_id_a) | set(by_id_b)):
        if by_id_a.get(i) != by_id_b.get(i):
            return f"id {i} is {by_id_a.get(i)!r} in one and {by_id_b.get(i)!r} in the other"
    return "the same ids and tokens, but other special tokens"


def score_text(
    model,
    tokenizer,
    continuation: str,
    prompt: str = "",
    sampling: Sampling | None = None,
    chunk_size: int | None = None,
    stride: int | None = None,
    max_context: int | None = None,
    reference=None,
    reference_sampling: Sampling | None = None,
    cross_with: str = "raw",
    reference_tokenizer=None,
) -> ScoredText:
    """Score ``continuation`` after ``prompt`` (prompt masked out); see ``score_ids`` for the columns.

    ``reference`` (a model on this tokenizer's vocabulary, or "self") adds the cross statistics as in
    ``score_ids``; a reference with another vocabulary raises ``ScoringError`` ("vocabulary mismatch"),
    also when the sizes agree but the ids do not (its tokenizer: ``reference_tokenizer``, else the one
    ``load_model`` attached to it).
    """
    ids, first, n_bytes = tokenize_with_prompt(tokenizer, prompt, continuation)
    if first >= len(ids):
        raise ScoringError("nothing to score: the continuation is empty after tokenization")
    df = score_ids(
        model, ids, first, sampling=sampling, eos_token_ids=eos_ids(tokenizer, model), chunk_size=chunk_size,
        stride=stride, max_context=max_context, reference=reference, reference_sampling=reference_sampling,
        cross_with=cross_with, tokenizer=tokenizer, reference_tokenizer=reference_tokenizer,
    )
    return scored_text(tokenizer, df, ids, first, n_bytes)


def scored_text(tokenizer, df: pd.DataFrame, ids: list[int], first: int, n_bytes: int) -> ScoredText:
    """``score_text``'s result from its ``score_ids`` table: ``token_text`` added, bits per byte."""
    df.insert(scorer_columns(text=True).index("token_text"), "token_text",
              [tokenizer.decode([t]) for t in df["token_id"].tolist()])
    bpb = float(df["surprisal_raw"].sum() / n_bytes) if n_bytes else float("nan")
    return ScoredText(tokens=df, input_ids=ids, first_scored=first, n_bytes=n_bytes, bits_per_byte=bpb)
