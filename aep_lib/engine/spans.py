"""Which tokens of a text are scored, and over how many bytes: one rule for every model.

**Source masking.** ``prompt + text`` is tokenized once; a token is scored iff its character span
starts at or after ``len(prompt)`` (special tokens never are). The prompt is context only.

**The first token.** A text with no prompt is a document on its own: every one of its tokens is scored,
the first conditioned on the model's start-of-document token (``document_start_id``): the BOS that the
tokenizer adds (Gemma), else the tokenizer's BOS token, else its EOS token (lm-evaluation-harness's rule;
SmolLM2: ``<|im_start|>``, Qwen2.5: ``<|endoftext|>``). Only a tokenizer with neither leaves its first
token unscored, as context. So bits per byte cover the same bytes of a text under every model.

**Bits per byte** divide by the UTF-8 bytes of the scored span (``span_bytes``): from the first scored
token's first character to the last scored token's last, never the bytes of unscored tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


SPAN_RULE = 2  # part of a windowed text scoring's run id: 2 since the first-token rule above (1: before it)


class ScoringError(ValueError):
    """The text cannot be scored as asked; the message says why and what to change."""


@dataclass
class TokenSpan:
    """A text tokenized for scoring with source masking: ``ids[:first]`` is context (prompt, BOS),
    ``ids[first:]`` is scored. ``char_end[i]``: where scored token ``i``'s span ends, in characters of the
    text (the prompt not counted); ``byte_end[i]``: UTF-8 bytes of the scored span up to that end."""

    ids: list[int]
    first: int
    scored_text: str  # the characters of the scored tokens
    n_tokens_available: int  # scored tokens before the max_tokens cut
    char_end: np.ndarray
    byte_end: np.ndarray | None = None

    @property
    def n_bytes(self) -> int:
        """UTF-8 bytes of the scored span (the divisor of bits per byte)."""
        return len(self.scored_text.encode("utf-8"))


def document_start_id(tokenizer) -> int | None:
    """The token a text with no prompt is conditioned on when the tokenizer adds no BOS itself: its BOS
    token, else its EOS token; ``None`` when it has neither."""
    for token_id in (getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if token_id is not None:
            return int(token_id)
    return None


def masked_encoding(tokenizer, prompt: str, text: str):
    """``(ids, offsets, special, first)`` of ``prompt + text``: source masking and the first-token rule in
    one place (module docstring). ``first >= 1`` always (``len(ids)`` when nothing is scored)."""
    try:
        enc = tokenizer(prompt + text, add_special_tokens=True, return_offsets_mapping=True,
                        return_special_tokens_mask=True)
    except NotImplementedError:
        raise ScoringError("this tokenizer gives no character offsets (a 'fast' tokenizer is needed)") from None
    ids, offsets, special = list(enc["input_ids"]), list(enc["offset_mapping"]), list(enc["special_tokens_mask"])
    start = document_start_id(tokenizer)
    if not prompt and (not special or not special[0]) and start is not None:
        ids, offsets, special = [start, *ids], [(0, 0), *offsets], [1, *special]
    first = next((i for i, ((a, _), sp) in enumerate(zip(offsets, special)) if not sp and a >= len(prompt)), len(ids))
    return ids, offsets, special, max(first, 1) if ids else first


def utf8_prefix_bytes(text: str) -> np.ndarray:
    """``out[c]``: UTF-8 bytes of ``text[:c]`` (length ``len(text) + 1``)."""
    out = np.zeros(len(text) + 1, dtype=np.int64)
    if text:
        out[1:] = np.cumsum([len(ch.encode("utf-8")) for ch in text])
    return out


def span_bytes(full: str, offsets, first: int, end: int) -> np.ndarray:
    """UTF-8 bytes of the scored span ``full[offsets[first][0]:]`` up to the end of each scored token
    ``first..end-1`` (special tokens' empty offsets do not move it back)."""
    if end <= first:
        return np.zeros(0, dtype=np.int64)
    prefix = utf8_prefix_bytes(full)
    ends = np.maximum.accumulate(np.array([offsets[i][1] for i in range(first, end)], dtype=np.int64))
    return prefix[ends] - prefix[int(offsets[first][0])]


def tokenize_with_prompt(tokenizer, prompt: str, continuation: str) -> tuple[list[int], int, int]:
    """``(ids, first_scored, n_bytes)`` for ``prompt + continuation`` under ``tokenizer`` (every token,
    trailing special tokens included; ``n_bytes``: UTF-8 bytes of the scored span, ``span_bytes``)."""
    ids, offsets, _special, first = masked_encoding(tokenizer, prompt, continuation)
    ends = span_bytes(prompt + continuation, offsets, first, len(ids))
    return ids, first, int(ends[-1]) if len(ends) else 0


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
    """Tokenize ``prompt + text`` for scoring an external text: source masking and the first-token rule
    as in ``masked_encoding``, a trailing end-of-text token dropped, and at most ``max_tokens`` scored
    tokens kept. Raises ``ScoringError`` when nothing is left to score.

    With ``max_tokens``, a text longer than ``PREFIX_CHARS_PER_TOKEN`` characters per token is encoded
    only up to a word boundary past that budget (twice as far again until the prefix holds
    ``PREFIX_MARGIN_TOKENS`` tokens beyond the kept ones), and the tokens of the rest are counted
    piecewise (``count_tokens``) for ``n_tokens_available``: memory bounded by the prefix, not the text.
    """
    chars = PREFIX_CHARS_PER_TOKEN * (int(max_tokens) + PREFIX_MARGIN_TOKENS) if max_tokens else len(text)
    while True:
        cut = whitespace_cut(text, chars)
        ids, offsets, special, first = masked_encoding(tokenizer, prompt, text[:cut])
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
    return TokenSpan(ids[:end], first, full[offsets[first][0] : offsets[end - 1][1]], n_total - first, char_end,
                     span_bytes(full, offsets, first, end))
