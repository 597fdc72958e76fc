"""Scoring the first tokens of a long text tokenizes a prefix of it, not the whole text, and gives the same
tokens, the same count of available tokens and the same detector scores as tokenizing the whole text.

The tokenizer is wrapped to record the longest string it is handed (its own calls and its backend's);
the tiny model of ``tests/_tiny.py`` keeps this fast.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from _tiny import TEXT, build_tiny_model

from aep_lib.analysis import detect
from aep_lib.engine import score, spans
from aep_lib.engine.models import load_model

MAX_TOKENS = 32


class RecordingBackend:
    def __init__(self, inner, record):
        self.inner, self.record = inner, record

    def encode(self, text, *args, **kwargs):
        self.record.seen(text)
        return self.inner.encode(text, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class RecordingTokenizer:
    """A tokenizer that remembers the longest text it (or its backend) was asked to encode."""

    def __init__(self, inner):
        self.inner, self.longest = inner, 0

    def seen(self, text) -> None:
        texts = [text] if isinstance(text, str) else list(text)
        self.longest = max([self.longest, *(len(t) for t in texts)])

    def __call__(self, text, *args, **kwargs):
        self.seen(text)
        return self.inner(text, *args, **kwargs)

    @property
    def backend_tokenizer(self):
        return RecordingBackend(self.inner.backend_tokenizer, self)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def loaded(tiny):
    return load_model(tiny, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def long_text():
    """About 300,000 characters of the tiny model's sentences in a shuffled order, with some line breaks."""
    sentences = [s.strip() + "." for s in TEXT.split(".") if s.strip()]
    rng = random.Random(0)
    parts = []
    while sum(len(p) for p in parts) < 300_000:
        parts.append(rng.choice(sentences) + rng.choice([" ", " ", "  ", "\n", "\n\n"]))
    return "".join(parts)


@pytest.mark.parametrize("prompt", ["", "In the spring"])
def test_a_long_text_is_tokenized_up_to_a_prefix_with_the_whole_texts_tokens(loaded, long_text, prompt):
    _, tok = loaded
    whole = spans.tokenize_span(tok, long_text, prompt)  # every token of the whole text
    recording = RecordingTokenizer(tok)
    span = spans.tokenize_span(recording, long_text, prompt, MAX_TOKENS)
    assert recording.longest < len(long_text) // 4  # never the whole text in one call
    assert span.first == whole.first and span.ids == whole.ids[: whole.first + MAX_TOKENS]
    assert span.n_tokens_available == whole.n_tokens_available
    np.testing.assert_array_equal(span.char_end, whole.char_end[:MAX_TOKENS])
    assert whole.scored_text.startswith(span.scored_text) and len(span.char_end) == MAX_TOKENS
    ordinary = RecordingTokenizer(tok)  # a text within the character budget: tokenized whole, as always
    short = spans.tokenize_span(ordinary, TEXT, prompt, MAX_TOKENS)
    assert ordinary.longest == len(prompt + TEXT)
    prefixed = 0 if prompt else 1  # with no prompt the start-of-document token comes first (spans.masked_encoding)
    assert short.n_tokens_available == len(tok(prompt + TEXT)["input_ids"]) + prefixed - short.first


def test_detector_scores_of_a_long_text_equal_those_of_its_whole_tokenization(tiny, loaded, long_text, monkeypatch):
    model, tok = loaded
    recording = RecordingTokenizer(tok)
    monkeypatch.setattr(detect, "cached_model", lambda name, device="auto", dtype="auto": (model, recording))
    scores = detect.score_texts(tiny, pd.DataFrame({"text": [long_text]}), max_tokens=MAX_TOKENS)
    assert recording.longest < len(long_text) // 4
    whole = spans.tokenize_span(tok, long_text, "")
    cut = spans.TokenSpan(whole.ids[: whole.first + MAX_TOKENS], whole.first, "", whole.n_tokens_available,
                          whole.char_end[:MAX_TOKENS])
    offsets = [(0, 0), *tok(long_text, return_offsets_mapping=True)["offset_mapping"]]  # the start-of-document token first
    text = long_text[offsets[whole.first][0] : offsets[whole.first + MAX_TOKENS - 1][1]]
    expected = detect.detector_scores(detect.score_prepared(model, tok, cut), text, k=0.2)
    row = scores.iloc[0]
    assert int(row["n_tokens_available"]) == whole.n_tokens_available and int(row["n_tokens"]) == MAX_TOKENS
    for name in detect.DETECTORS:
        assert row[name] == pytest.approx(expected[name], rel=1e-12, abs=1e-12), name


def test_the_too_long_error_names_the_argument_and_the_command_line_option(loaded):
    model, _ = loaded
    with pytest.raises(score.ScoringError) as err:
        score.score_ids(model, list(range(1, 301)), 1)  # the tiny model's context window is 256 tokens
    message = str(err.value)
    assert "text of 300 tokens is longer than the model's context window (256)" in message
    assert "--stride <tokens>" in message and "stride=<tokens> to score_ids or score_text" in message
