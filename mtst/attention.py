"""MPNet attention through ``torch.nn.functional.scaled_dot_product_attention``.

The stock Hugging Face MPNet has only eager attention, and its encoder builds the relative-position
bias expanded to ``(B, heads, L, L)`` on every forward, then adds it and the padding mask to the
scores in every layer. ``use_sdpa`` patches a loaded backbone so that the encoder combines the bias
``(1, heads, L, L)`` and the padding mask ``(B, 1, L, L)`` into one additive float mask, once per
forward, and every layer hands it to SDPA (one fused kernel: no score matrix in Python, no separate
softmax and dropout passes). The result equals eager attention up to float rounding.

The patch swaps the class of the encoder and self-attention instances of a loaded backbone (weights
stay where they are), so it works on the tiny and the real model, also under a peft LoRA wrapper
whose adapters wrap the q, k, v, o projections; ``use_sdpa(backbone, False)`` swaps them back.

Also here, the other inference kernel swap ``SentenceTransformer.encode`` makes: ``packed_linears``
runs the bf16 linears of a block on oneDNN with pre-packed weights on the CPU. fp32 stays on the stock
GEMM, the one sentence-transformers runs: oneDNN's packed fp32 GEMM rounds differently and moved
rounding-sensitive texts beyond the exact mode's 1e-5 (tests/test_real.py), on AVX2-only AMD EPYCs and
on an Intel Xeon with AMX alike.
"""

import contextlib
import functools
import weakref

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.mpnet.modeling_mpnet import MPNetEncoder, MPNetSelfAttention


def _attention_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the q, k, v projections will have: the autocast dtype when autocast is on."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def combined_mask(encoder: MPNetEncoder, hidden_states: torch.Tensor,
                  attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Relative-position bias plus padding mask as one additive mask.

    Args:
        encoder: the ``MPNetEncoder`` owning ``relative_attention_bias``.
        hidden_states: ``(B, L, H)``, for the length, device and dtype.
        attention_mask: the model's extended mask ``(B, 1, L, L)`` (additive float, or bool with
            True = attend), or None when nothing is padded.

    Returns:
        ``(1, heads, L, L)`` without padding, else ``(B, heads, L, L)``, in the attention dtype.
    """
    bias = encoder.compute_position_bias(hidden_states[:1])  # (1, heads, L, L), batch-independent
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            attention_mask = torch.zeros(attention_mask.shape, dtype=bias.dtype, device=bias.device) \
                .masked_fill(~attention_mask, torch.finfo(bias.dtype).min)
        # Same order of additions as the eager layer (scores + bias, then + mask), done once.
        bias = bias + attention_mask  # (B, heads, L, L)
    mask = bias.to(_attention_dtype(hidden_states))
    length = mask.shape[-1]
    if mask.device.type == "cuda" and length % 16:
        # CUDA's memory-efficient kernel wants every stride but the last a multiple of 16 elements;
        # otherwise it pads a copy of the mask in every layer. Pad once here, keep an (L, L) view.
        aligned = mask.new_empty(*mask.shape[:-1], length + 16 - length % 16)[..., :length]
        mask = aligned.copy_(mask)
    return mask


class SdpaMPNetEncoder(MPNetEncoder):
    """``MPNetEncoder`` that builds the combined mask once and hands it to every layer."""

    def forward(self, hidden_states, attention_mask=None, output_attentions=False, output_hidden_states=False,
                return_dict=False, **kwargs):
        """Run every layer on the one combined mask (the stock path when attention weights are asked for)."""
        if output_attentions:  # SDPA never materialises the probabilities: take the stock path
            return super().forward(hidden_states, attention_mask, output_attentions, output_hidden_states,
                                   return_dict, **kwargs)
        mask = combined_mask(self, hidden_states, attention_mask)
        all_hidden_states = () if output_hidden_states else None
        for layer in self.layer:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            # The combined mask travels as the position bias; the padding mask is already in it.
            hidden_states = layer(hidden_states, attention_mask=None, position_bias=mask)[0]
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        if not return_dict:
            return tuple(v for v in (hidden_states, all_hidden_states) if v is not None)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=all_hidden_states)


class SdpaMPNetSelfAttention(MPNetSelfAttention):
    """``MPNetSelfAttention`` through ``scaled_dot_product_attention``; same weights, same result."""

    def forward(self, hidden_states, attention_mask=None, position_bias=None, output_attentions=False, **kwargs):
        """Self-attention of ``(B, T, H)`` states, as the stock module computes it, through SDPA."""
        if output_attentions:
            return super().forward(hidden_states, attention_mask, position_bias, True, **kwargs)
        mask = position_bias
        if attention_mask is not None:  # called outside the patched encoder: combine here
            mask = attention_mask if mask is None else mask + attention_mask
        batch, length = hidden_states.shape[:2]
        shape = (batch, length, self.num_attention_heads, self.attention_head_size)
        q = self.q(hidden_states).view(shape).transpose(1, 2)  # (B, heads, L, d)
        k = self.k(hidden_states).view(shape).transpose(1, 2)
        v = self.v(hidden_states).view(shape).transpose(1, 2)
        if mask is not None and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)
        c = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout.p if self.training else 0.0)  # (B, heads, L, d)
        c = c.transpose(1, 2).reshape(batch, length, self.all_head_size)  # (B, L, H)
        return (self.o(c),)


_SWAPS = {MPNetEncoder: SdpaMPNetEncoder, MPNetSelfAttention: SdpaMPNetSelfAttention}


def use_sdpa(backbone: nn.Module, enabled: bool = True) -> int:
    """Route the MPNet attention of ``backbone`` through SDPA (``enabled``) or back to eager.

    Swaps the class of the encoder and of each self-attention module in place (no weights move),
    so state dicts, ``deepcopy``, pickling and peft wrappers are unaffected.

    Args:
        backbone: a loaded ``MPNetModel`` (or any module containing one, e.g. a peft wrapper).
        enabled: True patches, False restores the stock classes.

    Returns:
        The number of self-attention modules now in the requested mode (0: no MPNet inside).
    """
    switched = 0
    for module in backbone.modules():
        for stock, sdpa in _SWAPS.items():
            if type(module) in (stock, sdpa):
                module.__class__ = sdpa if enabled else stock
                switched += stock is MPNetSelfAttention
    return switched


def sdpa_enabled(backbone: nn.Module) -> bool:
    """Whether ``use_sdpa`` has patched the MPNet attention of ``backbone``."""
    return any(type(m) is SdpaMPNetSelfAttention for m in backbone.modules())


# ---------------------------------------------------------------- oneDNN-packed linears (CPU inference)

_PACKED: "weakref.WeakKeyDictionary[nn.Linear, tuple]" = weakref.WeakKeyDictionary()


class PackedLinear(nn.Linear):
    """``nn.Linear`` that, in bf16 on the CPU without autograd, multiplies by a weight pre-packed for oneDNN.

    Same math as bf16 autocast (or bf16 weights) through the stock layer; on the AVX512 AMD EPYC (Zen 4) of
    bench/encode.py ~1.2x faster. The packed copy is made on first use and again after any change of the
    weight; in fp32, with autograd on, on another device, and where oneDNN cannot pack bf16, this is the
    stock ``nn.Linear``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + b``: with the packed bf16 weight on the CPU without autograd, else the stock path."""
        autocast = torch.is_autocast_enabled("cpu")
        dtype = torch.get_autocast_dtype("cpu") if autocast else x.dtype
        if (torch.is_grad_enabled() or x.device.type != "cpu" or dtype != torch.bfloat16
                or not packed_bf16_available() or (not autocast and dtype != self.weight.dtype)):
            return super().forward(x)
        key = (self.weight.data_ptr(), self.weight._version, dtype)
        cached = _PACKED.get(self)
        if cached is None or cached[0] != key:
            weight = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach().to(dtype))
            bias = None if self.bias is None else self.bias.detach().to(dtype)
            cached = _PACKED[self] = (key, weight, bias)
        return torch.ops.mkldnn._linear_pointwise(x.to(dtype), cached[1], cached[2], "none", [], "")


@functools.cache
def packed_bf16_available() -> bool:
    """Whether oneDNN packs bf16 weights on this CPU (AVX512BW/VL/DQ or AVX-NE-CONVERT); on an AVX2-only CPU
    it raises, and bf16 takes the stock path."""
    return packed_linear_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def packed_linear_available() -> bool:
    """Whether this torch build has the oneDNN packed-linear kernel (``mkldnn._linear_pointwise``)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@contextlib.contextmanager
def packed_linears(module: nn.Module, enabled: bool = True):
    """Within the block, the plain ``nn.Linear`` layers of ``module`` are ``PackedLinear``s."""
    swapped = []
    if enabled and packed_linear_available():
        swapped = [m for m in module.modules() if type(m) is nn.Linear]
        for m in swapped:
            m.__class__ = PackedLinear
    try:
        yield
    finally:
        for m in swapped:
            m.__class__ = nn.Linear
