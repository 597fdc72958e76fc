"""The statistics of docs/science.md on distributions whose answers are known by hand."""

import math

import numpy as np
import pytest
import torch

from aep_lib.core.sampling import Sampling, SamplingWarp, gumbel_noise, sample
from aep_lib.core.stats import cross_stats, running, summarize, token_stats

NEG = float("-inf")


def logits_of(probs):
    return torch.tensor(probs, dtype=torch.float64).log().float().unsqueeze(0)


@pytest.mark.parametrize("k", [1, 2, 7, 1000, 49152])
def test_uniform_over_k(k):
    logits = torch.zeros(1, k)
    out = token_stats(logits, torch.tensor([0]))
    assert out["entropy"].item() == pytest.approx(math.log2(k), abs=1e-6)
    assert out["varentropy"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["surprisal"].item() == pytest.approx(math.log2(k), abs=1e-5)
    assert out["rank"].item() == 1  # ties do not count: nothing is strictly more probable


def test_uniform_over_k_of_a_larger_vocabulary():
    logits = torch.full((1, 10), NEG)
    logits[0, [2, 5, 7, 9]] = 3.0
    out = token_stats(logits, torch.tensor([5]))
    assert out["entropy"].item() == pytest.approx(2.0, abs=1e-6)
    assert out["varentropy"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["surprisal"].item() == pytest.approx(2.0, abs=1e-6)
    outside = token_stats(logits, torch.tensor([0]))
    assert math.isinf(outside["surprisal"].item()) and outside["surprisal"].item() > 0  # +inf, never NaN
    assert outside["rank"].item() == 5


def test_one_hot():
    logits = torch.full((1, 5), NEG)
    logits[0, 3] = 0.0
    out = token_stats(logits, torch.tensor([3]))
    assert out["entropy"].item() == 0.0 and out["varentropy"].item() == 0.0
    assert out["surprisal"].item() == pytest.approx(0.0, abs=1e-7)
    assert out["greedy"].item() == 3 and out["rank"].item() == 1


@pytest.mark.parametrize("p", [0.5, 0.1, 0.9, 0.001])
def test_two_point(p):
    logits = logits_of([p, 1 - p])
    h = -p * math.log2(p) - (1 - p) * math.log2(1 - p)
    v = p * (1 - p) * math.log2(p / (1 - p)) ** 2
    out = token_stats(logits, torch.tensor([0]))
    assert out["entropy"].item() == pytest.approx(h, abs=1e-6)
    assert out["varentropy"].item() == pytest.approx(v, abs=1e-5)
    assert out["surprisal"].item() == pytest.approx(-math.log2(p), abs=1e-5)
    assert out["rank"].item() == (1 if p >= 0.5 else 2)


def test_rank_counts_strictly_greater():
    logits = logits_of([0.4, 0.3, 0.2, 0.1])
    out = token_stats(logits.repeat(4, 1), torch.tensor([0, 1, 2, 3]))
    assert out["rank"].tolist() == [1, 2, 3, 4]
    assert out["greedy"].tolist() == [0, 0, 0, 0]


def test_cross_stats_by_hand():
    q, p = [0.5, 0.5], [0.25, 0.75]
    c = -0.5 * math.log2(0.25) - 0.5 * math.log2(0.75)
    w = 0.5 * (math.log2(0.25) + c) ** 2 + 0.5 * (math.log2(0.75) + c) ** 2
    out = cross_stats(logits_of(q), logits_of(p))
    assert out["cross_entropy"].item() == pytest.approx(c, abs=1e-6)
    assert out["cross_varentropy"].item() == pytest.approx(w, abs=1e-6)
    assert out["entropy_ref"].item() == pytest.approx(1.0, abs=1e-6)
    assert out["kl"].item() == pytest.approx(c - 1.0, abs=1e-6)


def test_cross_stats_of_a_distribution_with_itself():
    logits = torch.randn(3, 50)
    own = token_stats(logits, torch.zeros(3, dtype=torch.long))
    out = cross_stats(logits, logits)
    assert torch.allclose(out["cross_entropy"], own["entropy"], atol=1e-5)
    assert torch.allclose(out["cross_varentropy"], own["varentropy"], atol=1e-4)
    assert torch.allclose(out["kl"], torch.zeros(3, dtype=torch.float64), atol=1e-9)


def test_running_by_hand():
    r = running([1.0, 3.0], [2.0, 2.0], [1.0, 3.0])
    assert r["l_n"].tolist() == [1.0, 2.0]
    assert r["D_n"].tolist() == [-1.0, 0.0]
    assert r["sigma_n"].tolist() == pytest.approx([1.0, 1.0])
    assert r["z_n"].tolist() == pytest.approx([-1.0, 0.0])


def test_zero_varentropy_gives_nan_z_with_a_reason():
    s = summarize([0.0, 0.0], [0.0, 0.0], [0.0, 0.0])
    assert math.isnan(s["z"]) and "zero varentropy" in s["z_reason"]


def test_summary_shares_after_burn_in():
    # l_n = 1, 2, 5; h_n = 2; sigma_n = 1, 1, 2/3; z_n = -1, 0, 4.5: after burn-in 1, half within
    s = summarize([1.0, 3.0, 11.0], [2.0, 2.0, 2.0], [1.0, 3.0, 0.0], burn_in=1)
    assert s["z"] == pytest.approx(4.5)
    assert s["frac_within_1sigma"] == pytest.approx(0.5)
    assert s["frac_within_2sigma"] == pytest.approx(0.5)


# --- warps -------------------------------------------------------------------------------------------


def test_temperature_zero_is_one_hot_at_the_argmax():
    logits = logits_of([0.1, 0.6, 0.3])
    q = SamplingWarp(Sampling(temperature=0.0))(logits)
    out = token_stats(q, torch.tensor([1]))
    assert out["entropy"].item() == 0.0 and out["varentropy"].item() == 0.0 and out["surprisal"].item() == 0.0
    assert math.isinf(token_stats(q, torch.tensor([2]))["surprisal"].item())


@pytest.mark.parametrize("sampling", [Sampling(top_k=1), Sampling(top_p=1e-9), Sampling(temperature=0.7, top_k=1)])
def test_degenerate_truncations_are_one_hot(sampling):
    q = SamplingWarp(sampling)(logits_of([0.1, 0.6, 0.3]))
    assert torch.isfinite(q).sum().item() == 1 and q.argmax().item() == 1


def test_top_k_and_top_p_keep_the_expected_support():
    logits = logits_of([0.05, 0.5, 0.3, 0.15])
    q = torch.softmax(SamplingWarp(Sampling(top_k=2))(logits), -1)[0]
    assert q.tolist() == pytest.approx([0, 0.5 / 0.8, 0.3 / 0.8, 0], abs=1e-6)
    q = torch.softmax(SamplingWarp(Sampling(top_p=0.85))(logits), -1)[0]  # 0.5 + 0.3 < 0.85 -> keep 3
    assert q.tolist() == pytest.approx([0, 0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95], abs=1e-6)


def test_temperature_scales_logits():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    q = SamplingWarp(Sampling(temperature=0.5))(logits)
    assert torch.allclose(torch.softmax(q, -1), torch.softmax(logits / 0.5, -1))


def test_eos_suppression_is_part_of_q():
    logits = logits_of([0.5, 0.25, 0.25])
    q = SamplingWarp(Sampling(on_eos="suppress"), eos_token_ids=[0])(logits)
    assert math.isinf(q[0, 0].item())
    assert torch.softmax(q, -1)[0, 1:].tolist() == pytest.approx([0.5, 0.5])
    assert SamplingWarp(Sampling(on_eos="continue"), eos_token_ids=[0]).is_identity


def tie_heavy_logits(seed: int, rows: int, vocab: int) -> torch.Tensor:
    """Logits rounded as bfloat16 rounds them (many equal values), some tokens already excluded."""
    x = (torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 2.5).bfloat16().float()
    x[:, :3] = -torch.inf
    return x


@pytest.mark.parametrize("vocab", [5, 300, 49152])
@pytest.mark.parametrize("top_p", [0.01, 0.5, 0.9, 0.95, 0.999])
def test_top_p_by_selection_removes_what_transformers_removes(vocab, top_p):
    """``SelectTopP`` against transformers' ``TopPLogitsWarper``: bit for bit, ties at the cut included
    (``ties="sort"``); with ``ties="index"`` bit for bit what a stable arg-sort removes (lowest ids first)."""
    from transformers.generation.logits_process import TopPLogitsWarper

    from aep_lib.core.sampling import SelectTopP

    ids = torch.zeros(8, 1, dtype=torch.long)
    for x in (torch.randn(8, vocab, generator=torch.Generator().manual_seed(vocab)) * 3,
              tie_heavy_logits(vocab, 8, vocab), (torch.randn(8, vocab) * 3).round()):
        assert torch.equal(SelectTopP(top_p)(ids, x), TopPLogitsWarper(top_p=top_p)(ids, x))
        ordered, order = torch.sort(x, stable=True)
        removed = ordered.softmax(-1).cumsum(-1) <= (1 - top_p)
        removed[..., -1:] = False
        stable = x.masked_fill(removed.scatter(1, order, removed), -torch.inf)
        assert torch.equal(SelectTopP(top_p, ties="index")(ids, x), stable)


def test_top_p_ties_at_the_cut_keep_the_same_probabilities_either_way():
    """Half the tokens tie at the cut: both rules keep as many tokens, of the same probabilities."""
    from aep_lib.core.sampling import SelectTopP

    # p = .031 .085 .085 .085 .085 .629; ascending cumulative .031 .116 .202 ...: top-p .85 removes those <= .15,
    # the 0.0 and one of the four 1.0s
    x = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0, 3.0]])
    ids = torch.zeros(1, 1, dtype=torch.long)
    by_index = SelectTopP(0.85, ties="index")(ids, x)
    assert torch.isfinite(by_index).tolist() == [[False, False, True, True, True, True]]
    exact = SelectTopP(0.85)(ids, x)
    assert torch.isfinite(exact).sum() == 4 and sorted(exact[torch.isfinite(exact)].tolist()) == [1.0, 1.0, 1.0, 3.0]
    with pytest.raises(ValueError, match="ties must be"):
        SelectTopP(0.7, ties="random")


def test_warps_by_selection_and_by_sort_agree():
    logits = tie_heavy_logits(1, 6, 2000)
    for sampling in (Sampling(top_p=0.9), Sampling(temperature=0.7, top_k=50, top_p=0.8), Sampling(temperature=0)):
        assert torch.equal(SamplingWarp(sampling, [5])(logits), SamplingWarp(sampling, [5], top_p_by="sort")(logits))


def test_statistics_in_row_blocks_are_the_same_numbers():
    x = tie_heavy_logits(2, 7, 3000)
    tokens = torch.tensor([3, 10, 100, 2999, 0, 5, 7])
    whole = token_stats(x, tokens)
    for block in (1, 2, 3, 7, 100):
        blocked = token_stats(x, tokens, row_block=block)
        assert all(torch.equal(blocked[k], whole[k]) for k in whole)


@pytest.mark.parametrize("probs", [[1.0, 0.0, 0.0], [0.5, 0.5], [0.1, 0.9], [0.25] * 4])
def test_statistics_in_float32_by_hand(probs):
    """``precision=float32`` (the logits of a 16-bit model): one-hot, two-point and uniform by hand, excluded
    tokens included; float64 results."""
    p = np.array(probs)
    kept = p[p > 0]
    h = float(-(kept * np.log2(kept)).sum())
    v = float((kept * (np.log2(kept) + h) ** 2).sum())
    logits = torch.tensor(np.log(p), dtype=torch.float32).unsqueeze(0)  # log 0 = -inf: excluded
    for token in range(len(p)):
        out = token_stats(logits, torch.tensor([token]), precision=torch.float32)
        assert out["entropy"].dtype == torch.float64
        assert out["entropy"].item() == pytest.approx(h, abs=1e-6)
        assert out["varentropy"].item() == pytest.approx(v, abs=1e-5)
        expected = -math.log2(p[token]) if p[token] > 0 else math.inf
        assert out["surprisal"].item() == pytest.approx(expected, abs=1e-5)


def test_statistics_in_float32_are_those_in_float64_to_a_millionth_of_a_bit():
    """On bfloat16-rounded logits of a 49,152-token vocabulary, as raw ``p`` and as a top-p-truncated ``q``
    (most tokens excluded): float32 arithmetic within 1e-5 bits of float64 (2e-6 seen), ranks equal."""
    from aep_lib.core.sampling import SelectTopP

    x = tie_heavy_logits(5, 6, 49152)
    q = SelectTopP(0.9, ties="index")(None, x)
    tokens = q.argmax(-1)
    for logits in (x, q):
        exact = token_stats(logits, tokens)
        fast = token_stats(logits, tokens, precision=torch.float32)
        for k in ("surprisal", "entropy", "varentropy"):
            np.testing.assert_allclose(fast[k].numpy(), exact[k].numpy(), rtol=0, atol=1e-5)
        assert torch.equal(fast["rank"], exact["rank"]) and torch.equal(fast["greedy"], exact["greedy"])


def test_bfloat16_rows_sorted_by_counting_are_the_sorted_rows():
    from aep_lib.core.sampling import sorted_bf16_rows

    x = tie_heavy_logits(7, 5, 3000)
    x[0, 10], x[1, 11], x[2, 12], x[3, 13] = 0.0, -0.0, torch.inf, 2.0**100  # signed zeros, +inf, a large number
    assert torch.equal(sorted_bf16_rows(x), torch.from_numpy(np.sort(x.numpy(), axis=-1)))
    assert sorted_bf16_rows(x + 1e-3) is None  # not bfloat16 numbers: the caller sorts
    x[4, 0] = torch.nan
    assert sorted_bf16_rows(x) is None


# --- counter-based sampling --------------------------------------------------------------------------


def test_noise_of_a_sequence_does_not_depend_on_its_batch():
    alone = gumbel_noise([7], step=3, vocab_size=100)
    batched = gumbel_noise([1, 7, 9, 7], step=3, vocab_size=100)
    assert torch.equal(alone[0], batched[1]) and torch.equal(alone[0], batched[3])
    assert not torch.equal(batched[0], batched[1])
    assert not torch.equal(gumbel_noise([7], 4, 100), alone)


def test_gumbel_max_draws_from_q():
    probs = [0.5, 0.3, 0.15, 0.05]
    q = logits_of(probs)
    draws = torch.stack([sample(q, [s], step=0) for s in range(4000)]).flatten()
    freq = torch.bincount(draws, minlength=4).double() / len(draws)
    se = np.sqrt(np.array(probs) * (1 - np.array(probs)) / len(draws))
    assert np.all(np.abs(freq.numpy() - probs) < 4 * se)


def _cross_by_definition(q_logits, p_logits):
    """Straight from docs/science.md in numpy, one row at a time (0 log 0 = 0)."""
    out = []
    for ql, pl in zip(q_logits.double().numpy(), p_logits.double().numpy()):
        q = np.exp(ql - np.logaddexp.reduce(ql))
        with np.errstate(divide="ignore"):
            log2p = (pl - np.logaddexp.reduce(pl)) / math.log(2)
            log2q = np.log2(q)
        on = q > 0
        if np.isneginf(log2p[on]).any():
            out.append((math.inf, math.inf, None))
            continue
        c = -(q[on] * log2p[on]).sum()
        w = (q[on] * (log2p[on] + c) ** 2).sum()
        h = -(q[on] * log2q[on]).sum()
        out.append((c, w, h))
    return out


def test_cross_stats_with_truncated_distributions_match_the_definition():
    torch.manual_seed(3)
    q_logits, p_logits = torch.randn(6, 40) * 2, torch.randn(6, 40) * 2
    q_logits[:, 25:] = -torch.inf  # a truncated reference (top-p/top-k style)
    p_logits[:3, 30:] = -torch.inf  # the scorer excludes tokens q_A never puts mass on: finite
    p_logits[3:, 5] = -torch.inf  # ... and here one q_A does put mass on: infinite
    out = cross_stats(q_logits, p_logits)
    for i, (c, w, h) in enumerate(_cross_by_definition(q_logits, p_logits)):
        if math.isinf(c):
            assert math.isinf(out["cross_entropy"][i].item()) and math.isinf(out["kl"][i].item())
            continue
        assert out["cross_entropy"][i].item() == pytest.approx(c, abs=1e-9)
        assert out["cross_varentropy"][i].item() == pytest.approx(w, abs=1e-9)
        assert out["entropy_ref"][i].item() == pytest.approx(h, abs=1e-9)
    assert torch.isfinite(out["cross_entropy"][:3]).all() and torch.isinf(out["cross_entropy"][3:]).all()
