"""The rows of a scoring pass: logits from the model's last hidden states, and their statistics.

A scoring pass runs the model's base (``model.base_model``: the decoder without its output layer) and
applies the output layer (``head_logits``) only to the hidden states of the positions it scores, in
blocks of ``logit_rows`` rows: no ``[positions, vocab]`` logits of a whole window or batch exist at once,
and no output-layer product is spent on a context-only position (a prompt, the overlap of a sliding
window, the padding of a batch). Whether a model's logits are its output layer of its base's hidden
states (with Gemma's logit soft-capping where configured) is checked once per model on four tokens
(``head_matches``); a model for which it is not true is scored through its own forward pass.

``stats_rows`` reduces ``[rows, vocab]`` logits to the ``core.columns`` statistics in blocks of
``stats_row_block`` rows. The raw statistics of float32 logits are computed in float64 (the precision
rule of ``core.stats.stats_precision``) by ``float64_token_stats``: the numbers of ``core.stats.token_stats``
(surprisal and entropy bit for bit, varentropy within 1e-12 bits) in fewer passes over the block.
"""

from __future__ import annotations

import weakref

import torch

from ..core.columns import CROSS, RAW, SAMP, from_stats, needs_rank
from ..core.stats import LN2, cross_stats, stats_precision, token_stats
from .models import input_device

STATS_BLOCK_ELEMENTS = 1 << 19  # 512k: each float64 temporary of the statistics is 4 MiB
LOGIT_BLOCK_BYTES = 64 << 20  # the float32 logits of one block of scored rows (SmolLM2: 341 rows, Gemma: 64)


def stats_row_block(vocab_size: int) -> int:
    """Rows per block of the statistics: ``[rows, vocab]`` float64 temporaries of about 4 MiB each
    (2 rows for Gemma's 262k vocabulary, 10 for SmolLM2's 49k): small blocks stay in cache and on
    the heap (``models.keep_freed_blocks``); 1-2 Gemma rows took 1.2 ms each, 64 rows 6 ms."""
    return max(1, STATS_BLOCK_ELEMENTS // max(1, vocab_size))


def logit_rows(vocab_size: int) -> int:
    """Scored rows whose float32 logits are computed at once: ``LOGIT_BLOCK_BYTES`` of them, at least 8."""
    return max(8, LOGIT_BLOCK_BYTES // (4 * max(1, vocab_size)))


def float64_token_stats(logits: torch.Tensor, tokens: torch.Tensor, with_rank: bool = True) -> dict[str, torch.Tensor]:
    """``core.stats.token_stats`` of float32 (or float64) ``[rows, vocab]`` logits in float64, in fewer passes.

    With ``y = logit - max`` (exact in float64), ``e = exp(y)``, ``Z = sum e``, ``S1 = sum e·y`` and
    ``S2 = sum e·y²``: ``H = log Z - S1/Z`` and ``V = S2/Z - (S1/Z)²`` (nats, then bits; float64 keeps the
    cancellation of ``V`` near 1e-15 relative). The rank and the greedy token are compared on the logits
    themselves (the subtraction of the max is exact, so the order is the same). Logits that are not all
    finite (a warped distribution's excluded tokens) are handed to ``token_stats``.
    """
    if logits.dtype not in (torch.float32, torch.float64):
        return token_stats(logits, tokens, with_rank, precision=stats_precision(logits.dtype))
    tokens = tokens.long().unsqueeze(-1)
    top, greedy = logits.max(-1, keepdim=True)
    y = logits.to(torch.float64, copy=True).sub_(top.to(torch.float64))
    e = y.exp()
    z = e.sum(-1)
    ey = e.mul_(y)
    s1 = ey.sum(-1)
    s2 = torch.bmm(ey.unsqueeze(1), y.unsqueeze(2)).view(-1)
    if not (bool(torch.isfinite(s1).all()) and bool(torch.isfinite(s2).all())):
        return token_stats(logits, tokens.squeeze(-1), with_rank, precision=torch.float64)
    log_z, mean = z.log(), s1 / z
    y_obs = y.gather(-1, tokens).squeeze(-1)
    out = {"surprisal": (log_z - y_obs) / LN2, "entropy": (log_z - mean) / LN2,
           "varentropy": (s2 / z - mean * mean).clamp_(min=0.0) / (LN2 * LN2)}
    if with_rank:
        out["rank"] = 1 + (logits > logits.gather(-1, tokens)).sum(-1)
        out["greedy"] = greedy.squeeze(-1)
    return out


def raw_stats(block: torch.Tensor, targets: torch.Tensor, with_rank: bool) -> dict[str, torch.Tensor]:
    """The statistics of a block of raw logits at the precision of ``stats_precision``."""
    if stats_precision(block.dtype) == torch.float64:
        return float64_token_stats(block, targets, with_rank)
    return token_stats(block.float(), targets, with_rank, precision=stats_precision(block.dtype))


def stats_rows(logits, targets, warp, record_samp, row_block, ref_logits=None, ref_warp=None, cross_warp=None):
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
        block, tgt = logits[a : a + row_block], targets[a : a + row_block]
        row = from_stats(raw_stats(block, tgt, needs_rank(RAW)), RAW)
        block = block.float()
        warped = warp(block) if record_samp or cross_warp is not None else None
        if record_samp:
            row |= from_stats(token_stats(warped, tgt, with_rank=needs_rank(SAMP), precision=precision), SAMP)
        if ref_logits is not None:
            ref_block = ref_logits[a : a + row_block].float()
            row |= from_stats(cross_stats(ref_warp(ref_block), warped if cross_warp is not None else block), CROSS)
        row = {k: v.cpu() for k, v in row.items()}
        del block, warped
        if not out:
            # the outputs of the whole span, allocated once. Small result tensors kept per block
            # pinned the heap between the blocks' 4 MiB temporaries, which then could not merge back:
            # in about one run in seven the heap crept over 0.7-1 GiB of fresh pages, and scoring
            # 4,096 tokens with Gemma peaked 1.5 GiB above the model instead of 0.3 (bench scoring)
            out = {k: torch.empty((rows,) + v.shape[1:], dtype=v.dtype) for k, v in row.items()}
        for k, v in row.items():
            out[k][a : a + len(v)] = v
    return out


# --- logits from hidden states -------------------------------------------------------------------------

HEAD_CHECKS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def head_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """``[rows, vocab]`` logits of ``[rows, hidden]`` last hidden states: the output layer, then the
    logit soft-capping of models that configure one (``tanh(x / cap) * cap``)."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


@torch.no_grad()
def head_matches(model) -> bool:
    """Whether ``head_logits`` of ``model.base_model``'s last hidden states are the model's own logits
    (within 1e-4 on four tokens; checked once per model): then a scoring pass may run the base alone."""
    try:
        return HEAD_CHECKS[model]
    except (KeyError, TypeError):
        pass
    ok = False
    try:
        base, head = getattr(model, "base_model", None), model.get_output_embeddings()
        if base is not None and base is not model and head is not None:
            ids = torch.tensor([[1, 2, 3, 4]], device=input_device(model)) % int(model.config.vocab_size)
            own = model(input_ids=ids, use_cache=False).logits[0].float()
            ours = head_logits(model, base(input_ids=ids, use_cache=False).last_hidden_state[0]).float()
            ok = own.shape == ours.shape and bool(torch.allclose(own, ours.to(own.device), rtol=1e-4, atol=1e-4))
    except (AttributeError, TypeError, RuntimeError, NotImplementedError):
        ok = False
    try:
        HEAD_CHECKS[model] = ok
    except TypeError:
        pass
    return ok
