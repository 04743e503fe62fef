"""dorefa: DoReFa-Net weight quantization (Zhou et al. 2016, arXiv 1606.06160).

Reference code: tensorpack examples/DoReFa-Net/dorefa.py (``fw``).

quantize_k(x) = round((2^k - 1) x) / (2^k - 1), x in [0, 1]; straight-through (eq. 5):
the rounding is methods._ops.ste_round (identity gradient).

Forward, k-bit weights, k > 1 (eq. 9):
    t   = tanh(W)
    x   = t / (2 max|t|) + 1/2           (max over the whole tensor)
    W_q = 2 quantize_k(x) - 1            levels {-1, -1 + 2/(2^k-1), ..., 1}
  Backward: only the rounding is straight-through; tanh and the max normalisation are
  differentiated normally (including the gradient through max|t|, as in tensorpack, where
  nothing is stopped).
Forward, 1-bit weights (eq. 7 and tensorpack ``fw`` for bitW == 1):
    E   = mean|W| over the whole tensor (detached)
    W_b = sign(W) * E, sign(0) = +1 (methods._ops.sign)
  Backward: identity, dW_b/dW = 1 (tensorpack overrides Sign's gradient with Identity):
  methods._ops.ste_sign with clip=False.
Export: codes = round((2^k-1) x) (0 .. 2^k-1) with levels linspace(-1, 1, 2^k) and scale 1;
at 1 bit codes 0/1, levels [-1, 1], scale E. No deviation from the paper's weight path.
Pretrained start (``init.source``): W = the fp weights, BN re-estimated for W_q. At >= 4
bits the deployed network keeps the fp accuracy at step 0 within 2 points (tested; 39.0%
-> 39.0% at 4 bits, ResNet-20 on a CIFAR-10 subset); at 1-2 bits it is a binarised or
ternary-like network that cannot (25.3%, 26.8% there).
"""
from __future__ import annotations

import torch
from torch import nn

from methods._ops import ste_round, ste_sign
from methods.base import Method, WeightQuantizer, binary_export, register


def _normalised(w: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(w)
    return t / (2 * t.abs().max()) + 0.5


def dorefa_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa k-bit weights with the paper's gradient; see the module docstring."""
    if bits == 1:
        # sign(w / E) * E as in tensorpack: the identity gradient of sign then gives dW_b/dW = 1
        e = w.detach().abs().mean().clamp_min(torch.finfo(w.dtype).tiny)
        return ste_sign(w / e, clip=False) * e
    n = 2 ** bits - 1
    return 2 * (ste_round(_normalised(w) * n) / n) - 1


class DorefaWeight(WeightQuantizer):
    def __init__(self, weight: torch.Tensor, bits: int):
        super().__init__(weight, bits)
        self.weight = nn.Parameter(weight.detach().clone())

    def forward(self) -> torch.Tensor:
        return dorefa_weight(self.weight, self.bits)

    @torch.no_grad()
    def export(self):
        w = self.weight
        if self.bits == 1:
            return binary_export(w, w.abs().mean())
        n = 2 ** self.bits - 1
        codes = torch.round(_normalised(w) * n).to(torch.uint8)
        return {"codes": codes,
                "levels": torch.linspace(-1, 1, n + 1, dtype=w.dtype, device=w.device),
                "scale": torch.ones((), dtype=w.dtype, device=w.device)}


@register
class Dorefa(Method):
    name = "dorefa"
    display_name = "DoReFa-Net"
    bits = frozenset(range(1, 9))

    def make_quantizer(self, layer, name):
        return DorefaWeight(layer.weight, self.w_bits)
