"""The static and compiled engines of ``generate`` against the eager reference.

``static`` must give the eager engine's tokens and logits bit for bit (it runs the same kernels on a
pre-allocated cache) and its statistics to float64 rounding (bit for bit where its row blocks span the
batch); ``compiled`` the same tokens and statistics within 1e-3 bits. The cache
layer must answer transformers' mask questions as the dynamic layers do, and a grid of nearby lengths
must compile once.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aep_lib.core.sampling import Sampling, eos_ids
from aep_lib.engine import static_decode
from aep_lib.engine.generate import generate
from aep_lib.engine.static_decode import SlotLayer, cache_capacity, choose_engine, supports_static_cache

STATS = ["surprisal_raw", "entropy_raw", "varentropy_raw", "surprisal_samp", "entropy_samp", "varentropy_samp"]
CHAT = {
    "smollm2-135m": "<|im_start|>user\nSay only the word yes.<|im_end|>\n<|im_start|>assistant\n",
    "gemma-3-270m": "<start_of_turn>user\nSay only the word yes.<end_of_turn>\n<start_of_turn>model\n",
}
OTHERS = ["The history of the lighthouse begins", "Hi", "Recipe notes from my grandmother's kitchen:"]


def assert_bitwise_equal(a, b):
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.stop_reason for g in a] == [g.stop_reason for g in b]
    for x, y in zip(a, b):
        assert x.tokens.drop(columns="token_text").equals(y.tokens.drop(columns="token_text"))


def assert_same_run(a, b, atol: float = 1e-9):
    """The same tokens, stops, ranks and greedy ids; the statistics equal to float64 rounding (``atol`` bits).

    The static engine computes the statistics in row blocks (one row at a time for Gemma's 262k vocabulary):
    with several threads, torch splits a float64 sum over ``[1, vocab]`` differently from one over
    ``[batch, vocab]``, so they may differ in the last bits (~1e-15) though the logits are the same."""
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.stop_reason for g in a] == [g.stop_reason for g in b]
    for x, y in zip(a, b):
        for col in ("position", "token_id", "ctx_len", "rank_raw", "greedy_id"):
            assert x.tokens[col].tolist() == y.tokens[col].tolist(), col
        for col in STATS:
            np.testing.assert_allclose(y.tokens[col], x.tokens[col], rtol=0, atol=atol, err_msg=col)


def test_capacity_is_a_power_of_two_bucket():
    assert [cache_capacity(n) for n in (1, 64, 65, 128, 129, 530, 1024, 1025)] == [64, 64, 128, 128, 256, 1024,
                                                                                  1024, 2048]


@pytest.mark.parametrize("window", [None, 4])
def test_slot_layer_answers_as_the_dynamic_layer(window):
    """Same keys, values and mask sizes as transformers' DynamicLayer / DynamicSlidingWindowLayer, step by step."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    dynamic = DynamicSlidingWindowLayer(sliding_window=window) if window else DynamicLayer()
    slots = SlotLayer(40, sliding_window=window, longest_update=5)
    assert slots.slots == (8 if window else 40)  # a sliding layer holds two windows, not the sequence
    gen = torch.Generator().manual_seed(0)
    for q in (5, 1, 1, 1, 3) + (1,) * 29:  # a prompt, steps (past the window: compactions), a chunk, steps
        assert slots.get_mask_sizes(q) == dynamic.get_mask_sizes(q)
        k, v = torch.randn(2, 1, q, 8, generator=gen), torch.randn(2, 1, q, 8, generator=gen)
        for got, want in zip(slots.update(k, v), dynamic.update(k, v)):
            assert torch.equal(got, want)
        assert slots.get_seq_length() == dynamic.get_seq_length() and slots.stored <= slots.slots
    with pytest.raises(RuntimeError, match="static cache full"):
        slots.update(torch.zeros(2, 1, 41, 8), torch.zeros(2, 1, 41, 8))


def test_engine_choice():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1)
    model = LlamaForCausalLM(cfg)
    assert choose_engine("auto", model) == "static" and choose_engine("eager", model) == "eager"
    with pytest.raises(ValueError, match="engine must be one of"):
        choose_engine("fast", model)
    cfg.layer_types = ["full_attention", "linear_attention"]  # a cache with more than keys and values
    assert not supports_static_cache(model) and choose_engine("auto", model) == "eager"
    with pytest.raises(ValueError, match="use engine='eager'"):
        choose_engine("static", model)


def tiny_gemma(window: int = 4):
    """A random 3-layer Gemma 3 (sliding, full, sliding attention; window of ``window`` tokens) and the tiny
    tokenizer of ``tests/_tiny.py``."""
    import tempfile

    from _tiny import build_tiny_model
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    folder = build_tiny_model(tempfile.mkdtemp(prefix="aep-tiny-") + "/m")
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=window,
                           layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.3)
    return model, tok


def test_sliding_window_layers_past_the_window_match_eager():
    """Prompts and continuations far longer than a 4-token window: the static cache's views and masks
    give the eager engine's tokens and statistics bit for bit (left padding included)."""
    model, tok = tiny_gemma(window=4)
    prompts = ["The history of the lighthouse begins with fire", "In", "Ocean currents move heat. Dear diary,"]
    for sampling in (Sampling(temperature=1.0, top_p=0.9), Sampling(temperature=0.0)):
        eager = generate(model, tok, prompts, [1, 2, 3], sampling, 24, progress=False, engine="eager")
        static = generate(model, tok, prompts, [1, 2, 3], sampling, 24, progress=False, engine="static")
        assert_bitwise_equal(eager, static)
        assert static[0].extra["engine"] == "static"


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from _tiny import build_tiny_model

    from aep_lib.engine.models import load_model

    return load_model(str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "m")), device="cpu")


def test_compiled_steps_are_counted_and_reused_within_a_bucket(tiny_llama, monkeypatch):
    """Runs whose prompt + length fall in one power-of-two bucket share one compiled step; another bucket
    compiles once more. Counted by dynamo itself (its traced graphs) and by ``COMPILE_COUNTS``; the
    "eager" backend traces and guards exactly as inductor does, without generating code."""
    from torch._dynamo.utils import counters

    model, tok = tiny_llama
    monkeypatch.setattr(static_decode, "COMPILE_BACKEND", "eager")
    static_decode.forget_compiled_steps()
    counters.clear()
    sampling = Sampling(temperature=1.0, top_p=0.9)
    prompts = ["The history of", "Dear diary, today"]
    for n in (10, 20, 30):  # prompts of ~5 tokens: all within 64 slots
        out = generate(model, tok, prompts, [1, 2], sampling, n, progress=False, engine="compiled")
        assert [len(g.token_ids) for g in out] == [n, n]
    assert sum(static_decode.COMPILE_COUNTS.values()) == 1
    assert counters["stats"]["unique_graphs"] == 1
    generate(model, tok, prompts, [1, 2], sampling, 100, progress=False, engine="compiled")  # 128 slots
    assert static_decode.COMPILE_COUNTS == {(2, 64, model.config.vocab_size): 1, (2, 128, model.config.vocab_size): 1}
    assert counters["stats"]["unique_graphs"] == 2
    static_decode.forget_compiled_steps()


@pytest.mark.slow
def test_compiled_engine_with_inductor_matches_eager(tiny_llama):
    """The real thing: inductor's C++ step (minutes to compile on a busy 2-core machine)."""
    model, tok = tiny_llama
    static_decode.forget_compiled_steps()
    prompts = ["The history of", "Dear diary, today was", "In", "Recipe notes from my grandmother"]
    sampling = Sampling(temperature=1.0, top_p=0.9, on_eos="stop")
    eager = generate(model, tok, prompts, [1, 2, 3, 4], sampling, 20, progress=False, engine="eager")
    compiled = generate(model, tok, prompts, [1, 2, 3, 4], sampling, 20, progress=False, engine="compiled")
    assert [g.token_ids for g in compiled] == [g.token_ids for g in eager]
    for x, y in zip(eager, compiled):
        for col in STATS:
            np.testing.assert_allclose(y.tokens[col], x.tokens[col], atol=1e-3, err_msg=col)
    assert compiled[0].extra["compile_s"] > 0
    static_decode.forget_compiled_steps()


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma-3-270m"])
def embedded(request):
    from aep_lib.engine.models import cached_model

    return request.param, *cached_model(request.param, "cpu", "float32")


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 4])
def test_static_engine_equals_eager(embedded, batch, monkeypatch):
    """Both embedded models, a batch of 1 and of 4 with sequences stopping at EOS inside the batch (their
    slots stay masked while the others go on): the same tokens, statistics within 1e-9 bits (the engine's
    target is 1e-3; bit for bit on one thread, see ``assert_same_run``). Gemma 3 270M rarely ends a
    reply with its <eos>: for it the newline is made an end-of-text token too (its generation config), so
    that replies stop."""
    name, model, tok = embedded
    if name.startswith("gemma"):
        monkeypatch.setattr(model.generation_config, "eos_token_id", [tok.eos_token_id, tok.convert_tokens_to_ids("\n")])
    prompts = [CHAT[name], *OTHERS][:batch]
    sampling = Sampling(temperature=0.7, top_p=0.9, on_eos="stop")
    seeds = [3, 4, 5, 6][:batch]
    eager = generate(model, tok, prompts, seeds, sampling, 24, progress=False, engine="eager")
    static = generate(model, tok, prompts, seeds, sampling, 24, progress=False, engine="static")
    assert_same_run(eager, static)
    assert static[0].stop_reason == "eos" and static[0].token_ids[-1] in eos_ids(tok, model)
    if batch > 1:  # sequences stopped at different steps, one went on after another had stopped
        assert len({len(g.token_ids) for g in static}) > 1
