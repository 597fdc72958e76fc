"""The warps of ``q``: per-row warps (``RowWarps``: a batch whose rows sample differently warps each row exactly
as that row's own ``SamplingWarp`` would alone, bit for bit) and the end-of-text suppression (``SuppressIds``:
transformers' ``SuppressTokensLogitsProcessor``'s scores)."""

import torch
from transformers.generation.logits_process import SuppressTokensLogitsProcessor

from aep_lib.core.sampling import RowWarps, Sampling, SamplingWarp, SuppressIds

EOS = [3]


def logits(rows: int = 6, vocab: int = 64) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(0)) * 3


def test_each_row_is_warped_as_its_own_sampling_alone():
    settings = [Sampling(), Sampling(top_p=0.8), Sampling(temperature=0.7, top_k=5), Sampling(top_p=0.8),
                Sampling(temperature=0.0), Sampling(on_eos="continue")]
    x = logits()
    out = RowWarps(settings, EOS)(x)
    for i, s in enumerate(settings):
        assert torch.equal(out[i], SamplingWarp(s, EOS)(x[i : i + 1])[0]), s
    assert torch.isinf(out[1]).sum() > 0 and not torch.isinf(out[5]).any()  # top-p cut row 1; row 5 keeps all
    assert out[0, 3] == float("-inf") and out[5, 3] > float("-inf")  # EOS suppressed in row 0 only
    assert (out[2] > float("-inf")).sum() == 5 and (out[4] > float("-inf")).sum() == 1  # top-k 5; greedy


def test_one_sampling_for_every_row_is_that_sampling_warp():
    x = logits()
    one = Sampling(temperature=0.8, top_p=0.9)
    for warps in (RowWarps(one, EOS), RowWarps([one] * 6, EOS)):
        assert warps.uniform is not None and torch.equal(warps(x), SamplingWarp(one, EOS)(x))
    assert RowWarps([one, Sampling()], EOS).uniform is None


def test_suppressing_ids_gives_transformers_scores():
    x = logits()
    ids = [3, 63, 7, 3, 64]  # a repeat, the last id, one past the vocabulary
    ours = SuppressIds(ids)(None, x)
    theirs = SuppressTokensLogitsProcessor(ids)(None, x.clone())
    assert torch.equal(ours, theirs) and torch.isinf(ours).sum() == 3 * x.shape[0]
    assert torch.equal(x, logits())  # the input is left as it was
