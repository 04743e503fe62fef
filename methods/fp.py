"""fp: the full-precision reference (no paper; the float network every method is compared to).

Forward: y = conv(x, W) with the layer's own float weight W (no quantization, no scale).
Backward: the ordinary gradient dL/dW; the recipe's optimizer updates W. No deviation from
plain training; the layer still receives the recipe's activation quantizer, so "fp" at
a_bits < 32 means full-precision weights with quantized activations.
Export: a full-precision layer has no codes; deployed.pt stores its float weight.
Pretrained start (``init.source``, methods/base.py init_from_fp): the fp run's weights and
BN statistics are copied as they are: the same network, the same accuracy at step 0.
"""
from __future__ import annotations

import torch
from torch import nn

from methods.base import Method, WeightQuantizer, register


class FullPrecisionWeight(WeightQuantizer):
    def __init__(self, weight: torch.Tensor, bits: int):
        super().__init__(weight, bits)
        self.weight = nn.Parameter(weight.detach().clone())

    def forward(self) -> torch.Tensor:
        return self.weight


@register
class FullPrecision(Method):
    name = "fp"
    display_name = "FP (32-bit)"
    bits = frozenset({32})
    default_bits = 32

    def make_quantizer(self, layer, name):
        return FullPrecisionWeight(layer.weight, self.w_bits)
