"""Batched scoring of many texts (``engine.batch_score``) equals scoring each text alone (``score_ids``):
ragged lengths, a prompt mask, a text beyond the context window, the joint pass with a reference model;
bad batch sizes are one-line errors, and a batch that runs out of memory is split, not lost."""

import numpy as np
import pytest
import torch

from aep_lib.core.sampling import Sampling
from aep_lib.core.stats import token_stats
from aep_lib.engine import batch_score
from aep_lib.engine.batch_score import check_batch_size, score_many, texts_per_batch
from aep_lib.engine.score import ScoringError, score_ids
from aep_lib.engine.score_rows import float64_token_stats, head_matches

STATS = ["surprisal_raw", "entropy_raw", "varentropy_raw"]
EXACT = ["position", "token_id", "ctx_len", "rank_raw", "greedy_id"]


def ragged(tokenizer, lengths=(5, 40, 17, 2, 90, 33)) -> list[list[int]]:
    from _tiny import TEXT

    ids = tokenizer(TEXT * 4)["input_ids"]
    return [ids[3 * i : 3 * i + n] for i, n in enumerate(lengths)]


def assert_same(batched, alone, columns=STATS, atol=1e-4):
    assert list(batched.columns) == list(alone.columns)
    assert len(batched) == len(alone)
    for c in EXACT:
        if c in alone:
            assert batched[c].tolist() == alone[c].tolist(), c
    for c in columns:
        np.testing.assert_allclose(batched[c].to_numpy(), alone[c].to_numpy(), atol=atol, rtol=0, err_msg=c)


def test_fast_float64_statistics_equal_token_stats():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(37, 1000, generator=gen) * 4
    logits[3, 7] = logits[3, 9] = logits[3].max() + 1  # a tie at the top: the first id is the greedy one
    tokens = torch.randint(0, 1000, (37,), generator=gen)
    ours, ref = float64_token_stats(logits, tokens), token_stats(logits, tokens)
    assert set(ours) == set(ref)
    assert torch.equal(ours["surprisal"], ref["surprisal"]) and torch.equal(ours["entropy"], ref["entropy"])
    assert torch.allclose(ours["varentropy"], ref["varentropy"], atol=1e-12, rtol=0)
    assert torch.equal(ours["rank"], ref["rank"]) and torch.equal(ours["greedy"], ref["greedy"])
    assert ours["greedy"][3].item() == 7
    warped = logits.clone()
    warped[:, :500] = -torch.inf  # excluded tokens: token_stats' handling, +inf surprisal
    tokens[0] = 3
    ours, ref = float64_token_stats(warped, tokens), token_stats(warped, tokens)
    for k in ref:
        assert torch.equal(ours[k], ref[k]), k
    assert ours["surprisal"][0].item() == float("inf")


def test_ragged_texts_with_and_without_a_prompt_equal_one_at_a_time(tiny):
    model, tokenizer = tiny
    assert head_matches(model)
    texts = ragged(tokenizer)
    firsts = [1, 10, 0, 1, 45, 32]  # prompts of 9, 44 and 31 tokens; 0: the first token is context
    items = list(zip(texts, firsts))
    for batch_size in (None, 1, 2, 4):
        batched = score_many(model, items, batch_size=batch_size)
        for (ids, first), df in zip(items, batched):
            assert_same(df, score_ids(model, ids, first))


def test_a_text_beyond_the_context_is_scored_in_windows_beside_the_batch(tiny):
    model, tokenizer = tiny
    from _tiny import TEXT

    long = tokenizer(TEXT * 4)["input_ids"][:120]
    items = [(long, 1)] + [(ids, 1) for ids in ragged(tokenizer, (12, 15))]
    batched = score_many(model, items, max_context=16, stride=8)
    for (ids, first), df in zip(items, batched):
        assert_same(df, score_ids(model, ids, first, max_context=16, stride=8))
    assert len(batched[0]) == 119 and batched[0]["ctx_len"].max() <= 15
    with pytest.raises(ScoringError, match="longer than the model's context window"):
        score_many(model, items, max_context=16)


def test_the_joint_pass_with_a_reference_and_sampling_is_batched_too(tiny, tiny_folder):
    from aep_lib.bench.pair import perturbed_copy

    model, tokenizer = tiny
    other = perturbed_copy(model, scale=0.2)
    items = [(ids, 1) for ids in ragged(tokenizer, (30, 7, 64))]
    kw = {"sampling": Sampling(temperature=0.8, top_p=0.9), "eos_token_ids": [tokenizer.eos_token_id],
          "reference_sampling": Sampling(temperature=1.2)}
    for reference in (other, "self"):
        batched = score_many(model, items, reference=reference, **kw)
        for (ids, first), df in zip(items, batched):
            alone = score_ids(model, ids, first, reference=reference, **kw)
            cols = STATS + ["surprisal_samp", "entropy_samp", "cross_entropy", "cross_varentropy", "kl"]
            assert_same(df, alone, cols)
            assert "cross_entropy" in df and np.isfinite(df["cross_entropy"]).all()


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_a_batch_size_below_one_is_a_clear_error(tiny, bad):
    model, tokenizer = tiny
    with pytest.raises(ScoringError, match=f"batch size must be a whole number of texts, at least 1, got {bad}"):
        score_many(model, [(ragged(tokenizer)[1], 1)], batch_size=bad)
    with pytest.raises(ScoringError):
        check_batch_size(bad)


def test_the_batch_size_follows_the_memory(tiny):
    model, _ = tiny
    assert texts_per_batch(model, 100, 64, free_bytes=10**12) == min(64, batch_score.CPU_BATCH_TOKENS // 100)
    assert texts_per_batch(model, 100, 3, free_bytes=10**12) == 3
    assert texts_per_batch(model, 100, 64, free_bytes=0) == 1  # never below one text
    from aep_lib.engine.memory import MEMORY_FRACTION
    from aep_lib.engine.score_rows import logit_rows, stats_row_block

    vocab = model.config.vocab_size
    held = 4 * vocab * logit_rows(vocab) + 24 * vocab * stats_row_block(vocab)  # one block of logits and statistics
    five = batch_score.activation_bytes(model.config, 5, 100, 4)
    free = int((held + five) / MEMORY_FRACTION) + 1024
    assert texts_per_batch(model, 100, 64, free_bytes=free) == 5  # 40, 20 and 10 do not fit


def test_a_batch_that_runs_out_of_memory_is_split_not_lost(tiny, monkeypatch):
    model, tokenizer = tiny
    items = [(ids, 1) for ids in ragged(tokenizer)]
    real, sizes = batch_score.score_batch, []

    def fails_above_two(model, batch, *args):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return real(model, batch, *args)


    monkeypatch.setattr(batch_score, "score_batch", fails_above_two)
    batched = score_many(model, items, batch_size=6)
    assert sizes == [6, 3, 1, 2, 3, 1, 2]  # halved until it fits; every text scored once
    for (ids, first), df in zip(items, batched):
        assert_same(df, score_ids(model, ids, first))
    monkeypatch.setattr(batch_score, "score_batch", lambda *a: (_ for _ in ()).throw(RuntimeError("other")))
    with pytest.raises(RuntimeError, match="other"):  # not a memory error: raised, not split
        score_many(model, items, batch_size=6)


def test_texts_whose_single_pass_does_not_fit_are_scored_alone_in_chunks(tiny, monkeypatch):
    from aep_lib.engine.score import ScoringMemoryError

    model, tokenizer = tiny
    items = [(ids, 1) for ids in ragged(tokenizer)]
    refused = []

    def guard(scorers, n_tokens, n_window, rows, device, error=None, pass_tokens=None, **kw):
        if pass_tokens is None:  # the batch's one pass over its longest text
            refused.append(n_tokens)
            raise ScoringMemoryError(f"text of {n_tokens} tokens does not fit in memory")

    monkeypatch.setattr(batch_score, "check_scoring_fits", guard)
    monkeypatch.setattr(batch_score, "score_batch", lambda *a: pytest.fail("batched although it does not fit"))
    batched = score_many(model, items)
    assert refused == [90]
    for (ids, first), df in zip(items, batched):
        assert_same(df, score_ids(model, ids, first))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma-3-270m"])
def test_embedded_models_batched_equal_one_at_a_time(name):
    """Real models in float32: ragged texts (a prompt mask on one) within 1e-4 bits of scoring each alone."""
    from aep_lib.engine.models import cached_model
    from aep_lib.engine.spans import tokenize_span

    model, tokenizer = cached_model(name, "cpu", "float32")
    assert head_matches(model)
    texts = ["The lighthouse keeper climbed the stairs every evening at dusk.",
             "In the spring a young doctor arrived in the small mountain village, carrying a single suitcase "
             "and a letter of introduction that nobody in the village could read.", "Ocean currents move heat."]
    spans = [tokenize_span(tokenizer, t) for t in texts] + [tokenize_span(tokenizer, texts[0], "Question: why?")]
    items = [(s.ids, s.first) for s in spans]
    for (ids, first), df in zip(items, score_many(model, items)):
        assert_same(df, score_ids(model, ids, first))
