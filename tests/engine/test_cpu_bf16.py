"""bfloat16 on a CPU (``aep_lib.engine.cpu_bf16``): prepacked linears give the plain linear's numbers bit for bit,
the one-token attention gives sdpa's within one bfloat16 rounding, and ``load_model`` applies both to a
bfloat16 model on a CPU (only there), leaving its parameters as they were."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aep_lib.engine.models import cpu_features

pytestmark = pytest.mark.skipif(not cpu_features()["bf16"], reason="this CPU has no native bfloat16")


@pytest.mark.parametrize("shape", [(1, 64), (16, 64), (37, 64), (4, 9, 64)])
@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_equals_the_plain_linear_bit_for_bit(shape, bias):
    from aep_lib.engine.cpu_bf16 import PackedLinear

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 300, bias=bias).to(torch.bfloat16)
    packed = PackedLinear(linear)
    x = torch.randn(*shape, dtype=torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(packed(x), linear(x))
    assert packed.weight is linear.weight and packed(x).shape == (*shape[:-1], 300)


def attention_case(kv_len: int, padded: bool, heads: int = 6, kv_heads: int = 2, dim: int = 32, batch: int = 3):
    """A module with GQA, a query of one token, keys and values as a view of a longer cache buffer, and
    sdpa's boolean mask (left padding in the first row when ``padded``)."""
    gen = torch.Generator().manual_seed(kv_len)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = heads // kv_heads, True
    query = torch.randn(batch, heads, 1, dim, generator=gen).bfloat16()
    buffers = [torch.randn(batch, kv_heads, kv_len + 8, dim, generator=gen).bfloat16() for _ in range(2)]
    key, value = (b[:, :, :kv_len] for b in buffers)
    mask = torch.ones(batch, 1, 1, kv_len, dtype=torch.bool)
    if padded:
        mask[0, ..., : min(3, kv_len - 1)] = False  # (a query always sees itself)
    return module, query, key, value, mask if padded else None


@pytest.mark.parametrize("kv_len", [1, 7, 300])
@pytest.mark.parametrize("padded", [False, True])
def test_one_token_attention_equals_sdpa_within_a_bfloat16_rounding(kv_len, padded):
    """Against sdpa and against float64 arithmetic: the output is within a few bfloat16 roundings of the
    exact attention, as sdpa's is; the masked positions get no weight."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from aep_lib.engine.cpu_bf16 import one_token_attention

    module, query, key, value, mask = attention_case(kv_len, padded)
    ours, _ = one_token_attention(module, query, key, value, mask, scaling=0.2)
    ref, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.2)
    assert ours.shape == ref.shape == (3, 1, 6, 32) and ours.dtype == torch.bfloat16
    k, v = (t.double().repeat_interleave(3, dim=1) for t in (key, value))
    scores = (query.double() @ k.transpose(-1, -2)) * 0.2
    if mask is not None:
        scores = scores.masked_fill(~mask, -torch.inf)
    exact = (scores.softmax(-1) @ v).transpose(1, 2)
    assert (ours.double() - exact).abs().max() < 0.02  # a few roundings of bfloat16 (8 bits) on values ~1
    assert (ours.double() - ref.double()).abs().max() < 0.02
    if padded:  # the first row ignores its padded positions: changing them changes nothing
        key2, value2 = key.clone(), value.clone()
        key2[0, :, : min(3, kv_len - 1)], value2[0, :, : min(3, kv_len - 1)] = 100.0, 100.0
        assert torch.equal(one_token_attention(module, query, key2, value2, mask, scaling=0.2)[0], ours)


def test_several_query_tokens_and_float32_go_to_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from aep_lib.engine.cpu_bf16 import one_token_attention

    module, query, key, value, _ = attention_case(10, False)
    many = torch.randn(3, 6, 4, 32).bfloat16()
    assert torch.equal(one_token_attention(module, many, key, value, None, scaling=0.2)[0],
                       sdpa_attention_forward(module, many, key, value, None, scaling=0.2)[0])
    q32, k32, v32 = query.float(), key.float(), value.float()
    assert torch.equal(one_token_attention(module, q32, k32, v32, None, scaling=0.2)[0],
                       sdpa_attention_forward(module, q32, k32, v32, None, scaling=0.2)[0])


def test_load_model_applies_the_kernels_to_a_bfloat16_model_on_a_cpu_only(tiny_folder):
    """With the kernels (the default) and without them: the same parameters, the same prompt logits (the
    prompt's attention is sdpa's, the packed linears exact) and decoding steps within bfloat16 rounding;
    float32 models are loaded as transformers loads them."""
    from aep_lib.core.sampling import Sampling
    from aep_lib.engine.generate import generate
    from aep_lib.engine.models import load_model

    fast, tokenizer = load_model(str(tiny_folder), device="cpu", dtype="bfloat16")
    plain, _ = load_model(str(tiny_folder), device="cpu", dtype="bfloat16", bf16_kernels=False)
    f32, _ = load_model(str(tiny_folder), device="cpu", dtype="float32")
    assert fast.aep_kernels == {"packed_linears": 15, "attention": "aep_sdpa"}  # 7 per layer + the output layer
    assert plain.aep_kernels == {} and f32.aep_kernels == {} and f32.config._attn_implementation == "sdpa"
    assert fast.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(fast.state_dict().values(), plain.state_dict().values()))
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.eos_token, "left"
    ids = tokenizer(["The history of the lighthouse", "Dear diary"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(fast(**ids).logits, plain(**ids).logits)
    sampling = Sampling(temperature=1.0, top_p=0.9)
    a = generate(fast, tokenizer, ["The history", "Dear"], [1, 2], sampling, 24, progress=False, engine="static")
    b = generate(plain, tokenizer, ["The history", "Dear"], [1, 2], sampling, 24, progress=False, engine="static")
    for x, y in zip(a, b):
        same = np.array(x.token_ids) == np.array(y.token_ids)
        n = len(same) if same.all() else int(np.argmin(same))  # compare up to a first different token
        assert n >= 8
        np.testing.assert_allclose(x.tokens["entropy_raw"][:n], y.tokens["entropy_raw"][:n], atol=0.05)


def test_packed_linear_runs_inside_torch_compile():
    """inductor cannot lower the packed call: inside a compiled function the plain linear runs (the
    ``compiled`` engine on a bfloat16 model failed to compile before)."""
    from aep_lib.engine.cpu_bf16 import PackedLinear

    torch.manual_seed(0)
    linear = torch.nn.Linear(32, 48, bias=False).to(torch.bfloat16)
    packed = PackedLinear(linear)
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        compiled = torch.compile(lambda t: packed(t).float().softmax(-1), backend="inductor", dynamic=False)
        torch.testing.assert_close(compiled(x), linear(x).float().softmax(-1), atol=1e-2, rtol=0)


def test_scoring_a_bfloat16_model_computes_its_statistics_in_float32_to_a_millionth_of_a_bit(tiny_folder):
    """score_ids on a bfloat16 model: the statistics (float32 arithmetic) within 1e-5 bits of float64
    arithmetic on the same logits, returned as float64."""
    from aep_lib.core.sampling import Sampling
    from aep_lib.core.stats import token_stats
    from aep_lib.engine.models import load_model
    from aep_lib.engine.score import score_ids

    model, tokenizer = load_model(str(tiny_folder), device="cpu", dtype="bfloat16")
    ids = tokenizer("The history of the lighthouse begins with fire on a hill.")["input_ids"]
    scored = score_ids(model, ids, 1, sampling=Sampling(top_p=0.9))
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    exact = token_stats(logits, torch.tensor(ids[1:]))
    assert scored["entropy_raw"].dtype == np.float64
    for k in ("surprisal", "entropy", "varentropy"):
        np.testing.assert_allclose(scored[f"{k}_raw"].to_numpy(), exact[k].numpy(), rtol=0, atol=1e-5)
