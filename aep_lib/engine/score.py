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
import re
import weakref
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..core.columns import CROSS, RAW, SAMP, from_stats, needs_rank, scorer_columns
from ..core.sampling import Sampling, SamplingWarp, eos_ids
from ..core.stats import cross_stats, stats_precision, token_stats
from .memory import MemoryEstimateError, check_scoring_fits, model_device, release_free_memory, weight_bytes
from .models import cache_kwargs, input_device, new_cache


class ScoringError(ValueError):
    """The text cannot be scored as asked; the message says why and what to change."""


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


STATS_BLOCK_ELEMENTS = 1 << 19  # 512k: each float64 temporary of the statistics is 4 MiB


def stats_row_block(vocab_size: int) -> int:
    """Rows per block of the statistics: ``[rows, vocab]`` float64 temporaries of about 4 MiB each
    (2 rows for Gemma's 262k vocabulary, 10 for SmolLM2's 49k): small blocks stay in cache and on
    the heap (``models.keep_freed_blocks``); 1-2 Gemma rows took 1.2 ms each, 64 rows 6 ms."""
    return max(1, STATS_BLOCK_ELEMENTS // max(1, vocab_size))


def _stats_rows(logits, targets, warp, record_samp, row_block, ref_logits=None, ref_warp=None, cross_warp=None):
    """Statistics of ``[rows, vocab]`` logits in row blocks (bounded temporaries): the ``core.columns``
    statistic columns under ``raw``, with ``record_samp`` those under ``samp`` (this model's ``warp``).

    With ``ref_logits`` (``[rows, vocab]``, the reference's raw logits at the same positions; the
    scorer's own ``logits`` for a self-reference) also the cross statistics of ``ref_warp(ref_logits)``
    against this model's raw ``p`` (``cross_warp`` None) or its warped ``q`` (``cross_warp``).
    """
    rows = logits.shape[0]
    out: dict[str, torch.Tensor] = {}
    # a 16-bit model's statistics in float32 (stats.token_stats: 1e-6 bits from float64; Gemma's 4,096-token
    # scoring in bfloat16 spent 41% of its time in float64 statistics on an AMD EPYC)
    precision = stats_precision(logits.dtype)
    for a in range(0, rows, row_block):
        block, tgt = logits[a : a + row_block].float(), targets[a : a + row_block]
        raw = token_stats(block, tgt, with_rank=needs_rank(RAW), precision=precision)
        row = from_stats(raw, RAW)
        warped = warp(block) if record_samp or cross_warp is not None else None
        if record_samp:
            row |= from_stats(token_stats(warped, tgt, with_rank=needs_rank(SAMP), precision=precision), SAMP)
        if ref_logits is not None:
            ref_block = ref_logits[a : a + row_block].float()
            row |= from_stats(cross_stats(ref_warp(ref_block), warped if cross_warp is not None else block), CROSS)
        row = {k: v.cpu() for k, v in row.items()}
        del raw, block, warped
        if not out:
            # the outputs of the whole span, allocated once. Small result tensors kept per block
            # pinned the heap between the blocks' 4 MiB temporaries, which then could not merge back:
            # in about one run in seven the heap crept over 0.7-1 GiB of fresh pages, and scoring
            # 4,096 tokens with Gemma peaked 1.5 GiB above the model instead of 0.3 (bench scoring)
            out = {k: torch.empty((rows,) + v.shape[1:], dtype=v.dtype) for k, v in row.items()}
        for k, v in row.items():
            out[k][a : a + len(v)] = v
    return out


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


def forward_spans(model, ids: torch.Tensor, first_scored: int, chunk_size: int, max_context: int, stride):
    """Yield ``(targets_index [k], logits [k, vocab], ctx_len [k])`` for every scored position, in order,
    each exactly once.

    Within ``max_context``: one pass in chunks with the cache carried. Beyond: ``sliding_windows`` of
    ``max_context`` tokens, a fresh cache each (memory bounded by one window's cache and one chunk's
    logits), ``ctx_len`` counting the window's tokens before the target. A window whose cache and logits
    do not fit in memory raises ``ScoringMemoryError`` before the first forward pass.
    """
    n = ids.shape[0]
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
    check_scoring_fits([(model.config, weight_bytes(model))], n, min(n, max_context), chunk_size, model_device(model),
                       error=ScoringMemoryError)
    device = input_device(model)
    for begin, first_target, end in sliding_windows(n, first_scored, max_context, stride or max_context):
        ckw = cache_kwargs(model, new_cache(model))
        for a in range(begin, end - 1, chunk_size):
            b = min(a + chunk_size, end - 1)  # feed ids[a:b]; outputs predict targets a+1..b
            keep = b - max(a + 1, first_target) + 1  # targets from first_target on come from the last `keep`
            chunk = ids[a:b].unsqueeze(0).to(device)
            pos = torch.arange(a - begin, b - begin, device=device).unsqueeze(0)
            out = model(input_ids=chunk, position_ids=pos, use_cache=True, logits_to_keep=max(keep, 1), **ckw)
            if keep <= 0:
                continue
            targets = torch.arange(b + 1 - keep, b + 1)
            yield targets, out.logits[0, -keep:, :], targets - begin
            del out  # not alive beside the next chunk's logits (256 MiB each for Gemma on CPU)
        del ckw  # the window's cache, freed before the next window's


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

    Before the first forward pass, one window's KV cache and one chunk's logits (of both models) must fit in
    the memory the process can get (``memory.check_scoring_fits``): else ``ScoringMemoryError`` naming the
    longest window that fits.
    """
    ids = torch.as_tensor(list(input_ids), dtype=torch.long)
    on_gpu = input_device(model).type == "cuda"
    # CPU: 256-token chunks and ~32 MiB temporaries keep memory low at full speed; a GPU wants big
    # launches (chunk 256 gave 7% of the bf16 roofline on an H100, 2,048 several times more)
    chunk_size = chunk_size or (2048 if on_gpu else 256)
    row_block = row_block or stats_row_block(int(model.config.vocab_size)) * (16 if on_gpu else 1)
    if not 0 <= first_scored <= len(ids):
        raise ScoringError(f"first_scored={first_scored} outside the text of {len(ids)} tokens")
    max_context = max_context or context_window(model)
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
    if reference is not None and not self_reference:
        check_same_vocabulary(model, reference, tokenizer, reference_tokenizer)
        max_context = min(max_context, context_window(reference))
    ref_spans = (
        forward_spans(reference, ids, first_scored, chunk_size, max_context, stride)
        if reference is not None and not self_reference else None
    )
    cross_warp = warp if cross_with == "samp" else None
    if len(ids) <= max_context or stride:
        scorers = [model] + ([reference] if reference is not None and not self_reference else [])
        check_scoring_fits([(m.config, weight_bytes(m)) for m in scorers], len(ids), min(len(ids), max_context),
                           chunk_size, model_device(model), error=ScoringMemoryError)
    parts = []
    for targets, logits, ctx in forward_spans(model, ids, first_scored, chunk_size, max_context, stride):
        tgt_ids = ids[targets].to(logits.device)
        ref_logits = None
        if self_reference:
            ref_logits = logits
        elif ref_spans is not None:
            _, ref_logits, _ = next(ref_spans)
        part = _stats_rows(logits, tgt_ids, warp, warp is not None, row_block, ref_logits, ref_warp, cross_warp)
        part |= {"target_index": targets, "token_id": ids[targets], "ctx_len": ctx}
        parts.append(part)
        del logits, ref_logits  # freed before the next chunk's forward pass, not after it
        if not on_gpu:
            # glibc kept the freed blocks of each chunk (the growing attention and cache temporaries) and
            # could not reuse them for the next, larger ones: 8,191 SmolLM2 tokens in one window peaked
            # 1.39 GiB above the model, 0.43 with this (the cache itself is 0.35), at the same speed
            release_free_memory()
    if not parts:
        return pd.DataFrame(columns=["position", "token_id", "ctx_len", "surprisal_raw"])
    frame = {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}
    frame["position"] = frame.pop("target_index") - max(first_scored, 1)
    return pd.DataFrame({c: frame[c] for c in scorer_columns(samp=warp is not None, cross=reference is not None)})


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


@dataclass
class TokenSpan:
    """A text tokenized for scoring with source masking: ``ids[:first]`` is context (prompt, BOS),
    ``ids[first:]`` is scored. ``char_end[i]``: where scored token ``i``'s span ends, in characters of the
    text (the prompt not counted)."""

    ids: list[int]
    first: int
    scored_text: str  # the characters of the scored tokens
    n_tokens_available: int  # scored tokens before the max_tokens cut
    char_end: np.ndarray


def _masked_encoding(tokenizer, prompt: str, text: str):
    """``(ids, offsets, special, first)`` of ``prompt + text``: the source-masking rule in one place.

    A token is scored iff its character span starts at or after ``len(prompt)`` (special tokens, such
    as BOS, never are); ``first`` is the index of the first such token (``len(ids)`` when none is).
    """
    try:
        enc = tokenizer(prompt + text, add_special_tokens=True, return_offsets_mapping=True,
                        return_special_tokens_mask=True)
    except NotImplementedError:
        raise ScoringError("this tokenizer gives no character offsets (a 'fast' tokenizer is needed)") from None
    ids, offsets, special = enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]
    first = next((i for i, ((a, _), sp) in enumerate(zip(offsets, special)) if not sp and a >= len(prompt)), len(ids))
    return list(ids), offsets, special, first


def tokenize_with_prompt(tokenizer, prompt: str, continuation: str) -> tuple[list[int], int, int]:
    """``(ids, first_scored, n_bytes)`` for ``prompt + continuation`` under ``tokenizer`` (every token,
    trailing special tokens included; ``n_bytes``: UTF-8 bytes from the first scored token's span on)."""
    ids, offsets, _special, first = _masked_encoding(tokenizer, prompt, continuation)
    text = prompt + continuation
    span_start = offsets[first][0] if first < len(ids) else len(text)
    return ids, first, len(text[span_start:].encode("utf-8"))


PREFIX_CHARS_PER_TOKEN = 32  # characters of text read per token asked for (English runs 4-5 per token)
PREFIX_MARGIN_TOKENS = 32  # tokens a prefix must hold beyond those kept (the cut changes only the last ones)
COUNT_PIECE_CHARS = 1 << 16  # characters per piece when the tokens of the rest of a long text are counted
WHITESPACE_AFTER_TEXT = re.compile(r"(?<=\S)\s")


def whitespace_cut(text: str, at: int) -> int:
    """The first index ``>= at`` where whitespace follows a non-space character (a word boundary that the
    byte-level and space-splitting tokenizers never merge across), or ``len(text)``."""
    if at >= len(text):
        return len(text)
    match = WHITESPACE_AFTER_TEXT.search(text, max(int(at), 1))
    return match.start() if match else len(text)


def count_tokens(tokenizer, text: str) -> int:
    """Tokens of ``text`` (no special tokens added) counted in pieces of about ``COUNT_PIECE_CHARS``
    characters cut at ``whitespace_cut``, so that memory stays bounded by one piece's encoding."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    total, a = 0, 0
    while a < len(text):
        b = whitespace_cut(text, a + COUNT_PIECE_CHARS)
        piece = text[a:b]
        total += (len(backend.encode(piece, add_special_tokens=False)) if backend is not None
                  else len(tokenizer(piece, add_special_tokens=False)["input_ids"]))
        a = b
    return total


def tokenize_span(tokenizer, text: str, prompt: str = "", max_tokens: int | None = None) -> TokenSpan:
    """Tokenize ``prompt + text`` for scoring an external text: source masking as in
    ``tokenize_with_prompt``, the very first token never scored (it has no context), a trailing
    end-of-text token dropped, and at most ``max_tokens`` scored tokens kept. Raises ``ScoringError``
    when nothing is left to score.

    With ``max_tokens``, a text longer than ``PREFIX_CHARS_PER_TOKEN`` characters per token is encoded
    only up to a word boundary past that budget (twice as far again until the prefix holds
    ``PREFIX_MARGIN_TOKENS`` tokens beyond the kept ones), and the tokens of the rest are counted
    piecewise (``count_tokens``) for ``n_tokens_available``: memory bounded by the prefix, not the text.
    """
    chars = PREFIX_CHARS_PER_TOKEN * (int(max_tokens) + PREFIX_MARGIN_TOKENS) if max_tokens else len(text)
    while True:
        cut = whitespace_cut(text, chars)
        ids, offsets, special, first = _masked_encoding(tokenizer, prompt, text[:cut])
        first = max(first, 1)
        if cut == len(text) or len(ids) >= first + int(max_tokens) + PREFIX_MARGIN_TOKENS:
            break
        chars *= 2
    n_total = len(ids) + (count_tokens(tokenizer, text[cut:]) if cut < len(text) else 0)
    end = len(ids) if not max_tokens else min(len(ids), first + max_tokens)
    while end > first and special[end - 1]:  # a trailing EOS is not text
        end -= 1
    if end <= first:
        raise ScoringError("nothing to score: the text is empty after tokenization")
    full = prompt + text[:cut]
    char_end = np.array([offsets[i][1] - len(prompt) for i in range(first, end)], dtype=np.int64)
    return TokenSpan(ids[:end], first, full[offsets[first][0] : offsets[end - 1][1]], n_total - first, char_end)


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
    df.insert(scorer_columns(text=True).index("token_text"), "token_text",
              [tokenizer.decode([t]) for t in df["token_id"].tolist()])
    bpb = float(df["surprisal_raw"].sum() / n_bytes) if n_bytes else float("nan")
    return ScoredText(tokens=df, input_ids=ids, first_scored=first, n_bytes=n_bytes, bits_per_byte=bpb)
