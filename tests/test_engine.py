"""The measurement engine on a real model (SmolLM2, float32 on CPU).

Generation-time statistics must equal (a) those computed from transformers' own ``generate()``
scores on the same tokens and (b) a teacher-forced re-score; sampling must not depend on the batch.
"""

import numpy as np
import pytest
import torch
from transformers import GenerationConfig

from aep_lib.generate import generate
from aep_lib.sampling import Sampling
from aep_lib.sampling import eos_ids
from aep_lib.score import ScoringError, score_ids, score_text, tokenize_with_prompt
from aep_lib.stats import token_stats

pytestmark = pytest.mark.slow
STAT_COLUMNS = ["surprisal_raw", "entropy_raw", "varentropy_raw", "surprisal_samp", "entropy_samp", "varentropy_samp"]
PROMPT = "The history of the lighthouse begins"


@pytest.fixture(scope="module")
def smol():
    from aep_lib.models import cached_model

    return cached_model("smollm2-135m", "cpu", "float32")


def hf_generate(model, tokenizer, sampling: Sampling, n: int, seed: int = 0):
    """transformers' generate() with scores (= q logits) and logits (= p logits)."""
    enc = tokenizer(PROMPT, return_tensors="pt")
    eos = eos_ids(tokenizer, model)
    cfg = GenerationConfig(
        do_sample=not sampling.greedy, temperature=sampling.temperature or 1.0, top_k=sampling.top_k or 0,
        top_p=sampling.top_p, max_new_tokens=n, min_new_tokens=0, suppress_tokens=eos,
        pad_token_id=tokenizer.pad_token_id or eos[0], eos_token_id=eos,
        output_scores=True, output_logits=True, return_dict_in_generate=True,
    )
    torch.manual_seed(seed)
    out = model.generate(**enc, generation_config=cfg)
    new = out.sequences[0, enc.input_ids.shape[1] :]
    return enc.input_ids[0].tolist(), new, torch.stack(out.logits)[:, 0], torch.stack(out.scores)[:, 0]


def test_statistics_equal_those_from_transformers_generate(smol):
    model, tokenizer = smol
    sampling = Sampling(temperature=0.8, top_p=0.9)
    prompt_ids, new, raw_logits, q_logits = hf_generate(model, tokenizer, sampling, 24, seed=3)
    raw = token_stats(raw_logits, new)
    samp = token_stats(q_logits, new, with_rank=False)
    ours = score_ids(model, prompt_ids + new.tolist(), len(prompt_ids), sampling=sampling,
                     eos_token_ids=eos_ids(tokenizer, model))
    for col, ref in [("surprisal_raw", raw["surprisal"]), ("entropy_raw", raw["entropy"]),
                     ("varentropy_raw", raw["varentropy"]), ("surprisal_samp", samp["surprisal"]),
                     ("entropy_samp", samp["entropy"]), ("varentropy_samp", samp["varentropy"])]:
        np.testing.assert_allclose(ours[col].to_numpy(), ref.numpy(), atol=1e-3, err_msg=col)
    assert ours["rank_raw"].tolist() == raw["rank"].tolist()
    # q is truncated: some steps keep fewer tokens than p, so the two entropies differ
    assert (ours["entropy_samp"] < ours["entropy_raw"] - 1e-3).any()


def test_greedy_generation_equals_transformers_greedy(smol):
    model, tokenizer = smol
    sampling = Sampling(temperature=0.0)
    prompt_ids, new, raw_logits, _ = hf_generate(model, tokenizer, sampling, 16)
    ours = generate(model, tokenizer, [PROMPT], [0], sampling, 16, progress=False)[0]
    assert ours.token_ids == new.tolist()
    raw = token_stats(raw_logits, new)
    np.testing.assert_allclose(ours.tokens["entropy_raw"], raw["entropy"].numpy(), atol=1e-3)
    assert (ours.tokens["rank_raw"] == 1).all() and (ours.tokens["greedy_id"] == ours.tokens["token_id"]).all()
    assert (ours.tokens["entropy_samp"] == 0).all() and (ours.tokens["varentropy_samp"] == 0).all()
    assert (ours.tokens["surprisal_samp"] == 0).all()


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(temperature=0.7, top_k=50, top_p=0.9)])
def test_generation_statistics_equal_a_teacher_forced_rescore(smol, sampling):
    model, tokenizer = smol
    gens = generate(model, tokenizer, [PROMPT, "Dear diary,"], [11, 12], sampling, 40, progress=False)
    for g in gens:
        df = score_ids(model, g.prompt_ids + g.token_ids, len(g.prompt_ids), sampling=sampling,
                       eos_token_ids=eos_ids(tokenizer, model), chunk_size=16)
        assert len(df) == len(g.tokens) == 40
        for col in STAT_COLUMNS:
            np.testing.assert_allclose(df[col].to_numpy(), g.tokens[col].to_numpy(), atol=1e-3, err_msg=col)
        assert df["rank_raw"].tolist() == g.tokens["rank_raw"].tolist()
        assert df["ctx_len"].tolist() == g.tokens["ctx_len"].tolist()
        assert g.tokens["ctx_len"].iloc[0] == len(g.prompt_ids)


def test_a_sequence_is_the_same_alone_or_in_a_batch_of_four(smol):
    model, tokenizer = smol
    sampling = Sampling(temperature=1.0, top_p=0.95)
    prompts = ["Recipe notes from my grandmother's kitchen:", PROMPT, "Hi", "Once upon a time there was a fox"]
    batch = generate(model, tokenizer, prompts, [5, 6, 7, 8], sampling, 24, progress=False)
    for i in (0, 2):  # different prompt lengths: left padding must not leak
        alone = generate(model, tokenizer, [prompts[i]], [5 + i], sampling, 24, progress=False)[0]
        assert alone.token_ids == batch[i].token_ids
        np.testing.assert_allclose(alone.tokens["entropy_raw"], batch[i].tokens["entropy_raw"], atol=1e-3)


def test_same_parameters_same_text(smol):
    model, tokenizer = smol
    a = generate(model, tokenizer, [PROMPT], [42], Sampling(), 16, progress=False)[0]
    b = generate(model, tokenizer, [PROMPT], [42], Sampling(), 16, progress=False)[0]
    c = generate(model, tokenizer, [PROMPT], [43], Sampling(), 16, progress=False)[0]
    assert a.text == b.text and a.token_ids != c.token_ids


def test_stop_at_eos_is_recorded(smol):
    model, tokenizer = smol
    chat = "<|im_start|>user\nSay only the word yes.<|im_end|>\n<|im_start|>assistant\n"
    g = generate(model, tokenizer, [chat], [0], Sampling(temperature=0.0, on_eos="stop"), 40, progress=False)[0]
    assert g.stop_reason == "eos" and len(g.token_ids) < 40
    assert g.token_ids[-1] in eos_ids(tokenizer, model)
    s = generate(model, tokenizer, [chat], [0], Sampling(temperature=0.0, on_eos="suppress"), 20, progress=False)[0]
    assert s.stop_reason == "length" and len(s.token_ids) == 20
    assert not set(s.token_ids) & set(eos_ids(tokenizer, model))


def test_topk_recording_is_optional(smol):
    model, tokenizer = smol
    g = generate(model, tokenizer, [PROMPT], [0], Sampling(), 5, record_topk=3, progress=False)[0]
    assert len(g.tokens["topk_ids"][0]) == 3 and sum(g.tokens["topk_probs"][0]) <= 1.0
    assert "topk_ids" not in generate(model, tokenizer, [PROMPT], [0], Sampling(), 5, progress=False)[0].tokens


def test_chunked_scoring_equals_one_pass(smol):
    model, tokenizer = smol
    ids, first, _ = tokenize_with_prompt(tokenizer, "Chapter 1. ", "It was a bright cold day in April, and the "
                                         "clocks were striking thirteen. Winston Smith hurried home." * 3)
    whole = score_ids(model, ids, first, chunk_size=10_000)
    for chunk in (1, 7, 33):
        part = score_ids(model, ids, first, chunk_size=chunk)
        np.testing.assert_allclose(part["surprisal_raw"], whole["surprisal_raw"], atol=1e-3)
        np.testing.assert_allclose(part["entropy_raw"], whole["entropy_raw"], atol=1e-3)
        assert part["token_id"].tolist() == whole["token_id"].tolist()


def test_text_beyond_the_context_needs_a_stride(smol):
    model, tokenizer = smol
    ids = tokenizer("word " * 60)["input_ids"]
    with pytest.raises(ScoringError, match="longer than the model's context window .*stride"):
        score_ids(model, ids, 1, max_context=32)
    slid = score_ids(model, ids, 1, max_context=32, stride=16)
    whole = score_ids(model, ids, 1)
    assert len(slid) == len(whole) == len(ids) - 1
    assert slid["ctx_len"].max() <= 31
    # inside the first window nothing changes
    np.testing.assert_allclose(slid["surprisal_raw"][:30], whole["surprisal_raw"][:30], atol=1e-3)
    assert slid["ctx_len"].tolist()[:31] == whole["ctx_len"].tolist()[:31]


def test_source_masking_scores_only_the_continuation(smol):
    model, tokenizer = smol
    prompt, cont = "Question: what is the capital of France?", " Answer: Paris, of course."
    scored = score_text(model, tokenizer, cont, prompt=prompt)
    assert "".join(scored.tokens["token_text"]) == cont
    assert scored.n_bytes == len(cont.encode())
    assert scored.bits_per_byte == pytest.approx(scored.tokens["surprisal_raw"].sum() / scored.n_bytes)
