"""The measurement engine on a real model (SmolLM2, float32 on CPU; marked slow) and on a tiny one.

Generation-time statistics must equal (a) those computed from transformers' own ``generate()``
scores on the same tokens and (b) a teacher-forced re-score; sampling must not depend on the batch.
Long texts are scored token by token exactly once whatever the stride; two tokenizers of one size
but different ids are different vocabularies; a model spread over devices gives the same numbers.
"""

import numpy as np
import pytest
import torch
from transformers import GenerationConfig

from aep_lib.core.sampling import Sampling, eos_ids
from aep_lib.core.stats import token_stats
from aep_lib.engine.generate import generate
from aep_lib.engine.score import ScoringError, score_ids, score_text
from aep_lib.engine.spans import tokenize_with_prompt

STAT_COLUMNS = ["surprisal_raw", "entropy_raw", "varentropy_raw", "surprisal_samp", "entropy_samp", "varentropy_samp"]
PROMPT = "The history of the lighthouse begins"


@pytest.fixture(scope="module")
def smol():
    from aep_lib.engine.models import cached_model

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_sequence_is_the_same_alone_or_in_a_batch_of_four(smol):
    model, tokenizer = smol
    sampling = Sampling(temperature=1.0, top_p=0.95)
    prompts = ["Recipe notes from my grandmother's kitchen:", PROMPT, "Hi", "Once upon a time there was a fox"]
    batch = generate(model, tokenizer, prompts, [5, 6, 7, 8], sampling, 24, progress=False)
    for i in (0, 2):  # different prompt lengths: left padding must not leak
        alone = generate(model, tokenizer, [prompts[i]], [5 + i], sampling, 24, progress=False)[0]
        assert alone.token_ids == batch[i].token_ids
        np.testing.assert_allclose(alone.tokens["entropy_raw"], batch[i].tokens["entropy_raw"], atol=1e-3)


@pytest.mark.slow
def test_each_sequence_of_a_mixed_batch_samples_as_it_would_alone(smol):
    """One batch, four settings (untruncated, top-p, temperature with top-k, greedy stopping at EOS): each
    sequence's tokens, stop and statistics are those it gets alone with its own setting."""
    model, tokenizer = smol
    chat = "<|im_start|>user\nSay only the word yes.<|im_end|>\n<|im_start|>assistant\n"
    settings = [Sampling(), Sampling(top_p=0.9), Sampling(temperature=0.7, top_k=20),
                Sampling(temperature=0.0, on_eos="stop")]
    prompts, seeds = ["Recipe notes from my grandmother's kitchen:", PROMPT, "Hi", chat], [5, 6, 7, 8]
    mixed = generate(model, tokenizer, prompts, seeds, settings, 24, progress=False)
    for i, sampling in enumerate(settings):
        alone = generate(model, tokenizer, [prompts[i]], [seeds[i]], sampling, 24, progress=False)[0]
        assert alone.token_ids == mixed[i].token_ids and alone.stop_reason == mixed[i].stop_reason
        for col in STAT_COLUMNS:
            np.testing.assert_allclose(alone.tokens[col], mixed[i].tokens[col], atol=1e-3, err_msg=col)
    assert [g.stop_reason for g in mixed] == ["length", "length", "length", "eos"]
    assert (mixed[2].tokens["rank_raw"] <= 20).all() and (mixed[3].tokens["entropy_samp"] == 0).all()
    assert (mixed[1].tokens["entropy_samp"] < mixed[1].tokens["entropy_raw"]).all()


def test_the_compiled_engine_refuses_a_mixed_batch(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="compiled.*one Sampling"):
        generate(model, tokenizer, ["a", "b"], [0, 1], [Sampling(), Sampling(top_p=0.9)], 2, progress=False,
                 engine="compiled")
    with pytest.raises(ValueError, match="2 prompts but 3 samplings"):
        generate(model, tokenizer, ["a", "b"], [0, 1], [Sampling()] * 3, 2, progress=False)


@pytest.mark.slow
def test_same_parameters_same_text(smol):
    model, tokenizer = smol
    a = generate(model, tokenizer, [PROMPT], [42], Sampling(), 16, progress=False)[0]
    b = generate(model, tokenizer, [PROMPT], [42], Sampling(), 16, progress=False)[0]
    c = generate(model, tokenizer, [PROMPT], [43], Sampling(), 16, progress=False)[0]
    assert a.text == b.text and a.token_ids != c.token_ids


@pytest.mark.slow
def test_stop_at_eos_is_recorded(smol):
    model, tokenizer = smol
    chat = "<|im_start|>user\nSay only the word yes.<|im_end|>\n<|im_start|>assistant\n"
    g = generate(model, tokenizer, [chat], [0], Sampling(temperature=0.0, on_eos="stop"), 40, progress=False)[0]
    assert g.stop_reason == "eos" and len(g.token_ids) < 40
    assert g.token_ids[-1] in eos_ids(tokenizer, model)
    s = generate(model, tokenizer, [chat], [0], Sampling(temperature=0.0, on_eos="suppress"), 20, progress=False)[0]
    assert s.stop_reason == "length" and len(s.token_ids) == 20
    assert not set(s.token_ids) & set(eos_ids(tokenizer, model))


@pytest.mark.slow
def test_topk_recording_is_optional(smol):
    model, tokenizer = smol
    g = generate(model, tokenizer, [PROMPT], [0], Sampling(), 5, record_topk=3, progress=False)[0]
    assert len(g.tokens["topk_ids"][0]) == 3 and sum(g.tokens["topk_probs"][0]) <= 1.0
    assert "topk_ids" not in generate(model, tokenizer, [PROMPT], [0], Sampling(), 5, progress=False)[0].tokens


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_source_masking_scores_only_the_continuation(smol):
    model, tokenizer = smol
    prompt, cont = "Question: what is the capital of France?", " Answer: Paris, of course."
    scored = score_text(model, tokenizer, cont, prompt=prompt)
    assert "".join(scored.tokens["token_text"]) == cont
    assert scored.n_bytes == len(cont.encode())
    assert scored.bits_per_byte == pytest.approx(scored.tokens["surprisal_raw"].sum() / scored.n_bytes)


# --- a tiny model: long texts, vocabularies, devices, bfloat16 ----------------------------------------


def long_ids(tokenizer, n: int = 120) -> list[int]:
    from _tiny import TEXT

    ids = tokenizer(TEXT * 4)["input_ids"]
    assert len(ids) >= n
    return ids[:n]


def test_scoring_hands_freed_memory_back_after_every_chunk_on_a_cpu(tiny, monkeypatch):
    """glibc kept each chunk's freed temporaries (a 40,000-token text peaked 7.2 GiB above SmolLM2, 0.65 with the
    trim): ``score_ids`` trims once per scored chunk on a CPU, and the numbers are those of an untrimmed run."""
    import pandas as pd

    import aep_lib.engine.score as score_module
    from aep_lib.engine.score import sliding_windows

    model, tokenizer = tiny
    ids = long_ids(tokenizer)
    calls = []
    monkeypatch.setattr(score_module, "release_free_memory", lambda: calls.append(1))
    trimmed = score_ids(model, ids, 1, max_context=16, stride=8)
    assert len(calls) == len(sliding_windows(len(ids), 1, 16, 8))  # one chunk per 16-token window
    calls.clear()
    chunked = score_ids(model, ids[:16], 1, max_context=16, chunk_size=4)
    assert len(calls) == 4  # 15 fed tokens in chunks of 4
    monkeypatch.setattr(score_module, "release_free_memory", lambda: None)
    pd.testing.assert_frame_equal(trimmed, score_ids(model, ids, 1, max_context=16, stride=8))
    assert len(chunked) == 15


@pytest.mark.parametrize("stride", [16, 8, 15, 1])
def test_sliding_windows_score_every_token_exactly_once(tiny, stride):
    """A context of 16 tokens over a 120-token text: one row per scorable token, positions continuous
    (a stride equal to the context window used to drop the first token of every window after the first),
    every row the statistics of its own window."""
    model, tokenizer = tiny
    ids = long_ids(tokenizer)
    df = score_ids(model, ids, 1, max_context=16, stride=stride)
    assert len(df) == len(ids) - 1
    assert df["position"].tolist() == list(range(len(ids) - 1))
    assert df["token_id"].tolist() == ids[1:]
    assert df["ctx_len"].between(1, 15).all()
    if stride < 15:  # after the first window, each new target has 16 - stride tokens of context or more
        assert (df["ctx_len"].iloc[15:] >= 16 - stride).all()
    for row in df.iloc[[0, 14, 15, 16, 60, 118]].itertuples():
        target, ctx = row.position + 1, row.ctx_len
        alone = score_ids(model, ids[target - ctx : target + 1], ctx, max_context=16)
        assert len(alone) == 1 and alone["token_id"].item() == ids[target]
        assert alone["surprisal_raw"].item() == pytest.approx(row.surprisal_raw, abs=1e-4)
        assert alone["entropy_raw"].item() == pytest.approx(row.entropy_raw, abs=1e-4)


def test_sliding_windows_after_a_prompt(tiny):
    model, tokenizer = tiny
    ids = long_ids(tokenizer)
    df = score_ids(model, ids, 40, max_context=16, stride=16)
    assert df["position"].tolist() == list(range(len(ids) - 40)) and df["token_id"].tolist() == ids[40:]


def test_sliding_window_plan_is_linear_in_the_text():
    from aep_lib.engine.score import sliding_windows

    for n in (1_000, 40_000):
        windows = sliding_windows(n, 1, 8192, 4096)
        fed = sum(end - 1 - begin for begin, _, end in windows)
        assert fed <= 2 * n + 8192  # each token fed at most twice with a stride of half the context
        targets = [t for _, first, end in windows for t in range(first, end)]
        assert targets == list(range(1, n))
    assert sliding_windows(10, 1, 4, 4) == [(0, 1, 4), (3, 4, 7), (6, 7, 10)]  # windows overlap by 1 token


def swapped_vocabulary_copy(folder, dest):
    """The tiny model with a tokenizer of the same size whose first two ordinary tokens trade ids."""
    import json
    import shutil

    shutil.copytree(folder, dest)
    spec = json.loads((dest / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[1:3]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (dest / "tokenizer.json").write_text(json.dumps(spec))
    return dest


def test_same_size_but_different_ids_is_a_vocabulary_mismatch(tiny, tiny_folder, tmp_path):
    from aep_lib.engine.models import load_model
    from aep_lib.engine.score import VOCABULARY_DIGESTS, check_same_vocabulary

    model, tokenizer = tiny
    other, other_tok = load_model(str(swapped_vocabulary_copy(tiny_folder, tmp_path / "swapped")), device="cpu")
    assert len(other_tok) == len(tokenizer) and other.config.vocab_size == model.config.vocab_size
    assert other_tok.get_vocab() != tokenizer.get_vocab()
    with pytest.raises(ScoringError, match=r"vocabulary mismatch: .* map tokens to ids differently \(id 1 is"):
        score_text(model, tokenizer, " the lighthouse", prompt="In", reference=other)  # its tokenizer, from load_model
    with pytest.raises(ScoringError, match="vocabulary mismatch"):
        check_same_vocabulary(model, other, tokenizer, other_tok)
    assert tokenizer in VOCABULARY_DIGESTS and other_tok in VOCABULARY_DIGESTS  # once per tokenizer
    same, same_tok = load_model(str(tiny_folder), device="cpu")  # another object, the same vocabulary
    scored = score_text(model, tokenizer, " the lighthouse", prompt="In", reference=same)
    assert "cross_entropy" in scored.tokens and len(scored.tokens) > 0


def test_a_model_split_over_cpu_and_disk_gives_the_same_statistics(tiny, tiny_folder, tmp_path):
    """accelerate's device map: layer 1 offloaded to disk (its weights on the meta device between uses)."""
    from aep_lib.engine.models import input_device, load_model

    model, tokenizer = tiny
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                  "model.layers.1": "disk", "model.norm": "cpu", "lm_head": "cpu"}
    split, _ = load_model(str(tiny_folder), device="cpu", device_map=device_map, offload_folder=str(tmp_path / "off"))
    assert any(p.device.type == "meta" for p in split.parameters())
    assert input_device(split) == torch.device("cpu") and split.aep_identity["device"] == "map:cpu,disk"
    ids = long_ids(tokenizer, 40)
    whole, parts = score_ids(model, ids, 1), score_ids(split, ids, 1)
    np.testing.assert_allclose(parts[STAT_COLUMNS[:3]].to_numpy(), whole[STAT_COLUMNS[:3]].to_numpy(), atol=1e-6)
    sampling = Sampling(temperature=1.0, top_p=0.9)
    for engine in ("eager", "static"):
        a = generate(model, tokenizer, ["The history", "Dear"], [1, 2], sampling, 12, progress=False, engine=engine)
        b = generate(split, tokenizer, ["The history", "Dear"], [1, 2], sampling, 12, progress=False, engine=engine)
        assert [g.token_ids for g in a] == [g.token_ids for g in b]
        for x, y in zip(a, b):
            np.testing.assert_allclose(y.tokens[STAT_COLUMNS], x.tokens[STAT_COLUMNS], atol=1e-6)


def test_bfloat16_weights_float32_logits_float64_statistics(tiny_folder):
    """bfloat16 weights: the logits reach the statistics as float32 and the statistics are float64; the static
    engine equals the eager one bit for bit there too (no top-p); the statistics are those of the bf16
    model's logits."""
    from aep_lib.engine.models import cpu_features, load_model

    model, tokenizer = load_model(str(tiny_folder), device="cpu", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16 and model.aep_identity["dtype"] == "bfloat16"
    sampling = Sampling(temperature=0.8)  # no top-p: its ties at the cut are broken by id in the static engine
    a = generate(model, tokenizer, ["The history", "In"], [1, 2], sampling, 16, progress=False, engine="eager")
    b = generate(model, tokenizer, ["The history", "In"], [1, 2], sampling, 16, progress=False, engine="static")
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert a[0].tokens.drop(columns="token_text").equals(b[0].tokens.drop(columns="token_text"))
    assert b[0].tokens["entropy_raw"].dtype == np.float64
    g = b[0]
    with torch.no_grad():
        logits = model(torch.tensor([g.prompt_ids + g.token_ids])).logits[0, len(g.prompt_ids) - 1 : -1]
    raw = token_stats(logits.float(), torch.tensor(g.token_ids))
    np.testing.assert_allclose(g.tokens["entropy_raw"], raw["entropy"].numpy(), atol=0.05)  # bf16 kernels differ
    assert {"capability", "bf16", "amx"} <= set(cpu_features())
