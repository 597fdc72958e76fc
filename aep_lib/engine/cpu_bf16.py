"""bfloat16 models on a CPU: linear weights prepacked for oneDNN, and attention of one new token without sdpa.

``load_model`` applies ``use_bf16_cpu_kernels`` to a bfloat16 model on a CPU with native bfloat16 dot
products (``models.cpu_features()["bf16"]``), so every engine and every scoring of that model uses them.
Measured on a 2-core AMD EPYC with AVX-512 BF16 (no AMX), one thread, SmolLM2-135M shapes:

- ``PackedLinear``: ``F.linear`` on bfloat16 reorders the weight into oneDNN's blocked layout at every
  call; prepacked once (``torch.ops.mkldnn._reorder_linear_weight``), a linear of 16 rows ran 1.3-1.8x
  faster (the 49,152-row output layer 13.6 -> 7.6 ms) with the *same* numbers, bit for bit. The packed
  copy sits beside the weight (the model's parameters, its ``state_dict`` and tied weights are untouched),
  so the linear layers take twice their memory.
- ``one_token_attention``: transformers' ``sdpa`` at one query token with a padding mask packs the query
  heads of each key/value head and calls torch's CPU flash kernel (1.36 ms per layer at batch 16 and
  500 positions; 8.7 ms with no mask, through ``enable_gqa``); two batched matrix products and a
  float32 softmax take 0.53 ms. Not bit for bit: the scores are rounded to bfloat16 once (oneDNN
  accumulates in float32) before the float32 softmax, where the flash kernel keeps them in float32 (the
  attention output differs by about one bfloat16 rounding). Several query tokens (a prompt, a scored
  text) still go to ``sdpa``.

Together: 10 decoding steps at batch 16 after a 300-token prompt, 113 -> 72 ms a step (SmolLM2) and
160 -> 94 (Gemma 3 270M); the prompt's logits the same bit for bit. Against the float32 model, the
entropy of those steps is off by 0.075 bits on average with these kernels and 0.076 without (SmolLM2),
0.063 and 0.059 (Gemma): bfloat16's own error, about the same either way.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "aep_sdpa"  # sdpa, but one new token of a 16-bit model on a CPU by ``one_token_attention``
PACKING_ROWS = 16  # the row count oneDNN packs the weights for (any count runs; 16 = one batch's decode step)


class PackedLinear(torch.nn.Module):
    """An ``nn.Linear`` whose bfloat16 weight is also held prepacked for oneDNN (inference only: with
    gradients, or inside ``torch.compile``, whose inductor cannot lower the packed call, it runs as the
    plain linear)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias  # the same parameters: state_dict and ties unchanged
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), PACKING_ROWS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dtype != self.weight.dtype or torch.compiler.is_compiling()
                or (torch.is_grad_enabled() and x.requires_grad)):
            return torch.nn.functional.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def one_token_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' attention function (``AttentionInterface``): for one query token of a 16-bit model on
    a CPU, ``softmax(q k^T · scaling + mask) v`` with the query heads of a key/value head in one batched
    product; anything else (several tokens, float32, dropout, soft-capping, position bias) by ``sdpa``."""
    if (query.shape[2] != 1 or query.device.type != "cpu" or query.dtype == torch.float32 or dropout
            or kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None
            or key.shape[-1] != value.shape[-1]):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    scale = scaling if scaling is not None else dim ** -0.5
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    # a view of a static cache's buffer is copied first: the product over the strided view ran 3x slower
    key, value = key.contiguous(), value.contiguous()
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float().mul_(scale)  # [batch, kv_heads, group, keys]
    if attention_mask is not None:
        mask = attention_mask[..., -1:, :]  # [batch, 1, 1, keys]: broadcast over the heads
        scores = scores.masked_fill_(~mask, float("-inf")) if mask.dtype == torch.bool else scores.add_(mask)
    probs = scores.softmax(-1).to(value.dtype)
    out = torch.matmul(probs, value)  # [batch, kv_heads, group, dim]
    return out.reshape(batch, 1, heads, dim), None


def register_attention() -> None:
    """Make ``ATTENTION`` known to transformers (its attention function and, as for sdpa, its masks)."""
    AttentionInterface.register(ATTENTION, one_token_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def pack_linears(model) -> int:
    """Replace every bfloat16 ``nn.Linear`` of ``model`` by a ``PackedLinear``; how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and child.weight.dtype == torch.bfloat16:
                setattr(parent, name, PackedLinear(child))
                replaced += 1
    return replaced


def use_bf16_cpu_kernels(model) -> dict:
    """Prepack the linears of a bfloat16 model on a CPU and route its one-token attention through
    ``one_token_attention`` when it uses sdpa; what was done (for the model's identity)."""
    done = {"packed_linears": pack_linears(model), "attention": None}
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        register_attention()
        model.set_attn_implementation(ATTENTION)
        done["attention"] = ATTENTION
    return done
