"""ste: binary weights with the straight-through estimator (BinaryConnect / BNN / BWN / XNOR).

Papers: Courbariaux et al., "BinaryConnect", NeurIPS 2015 (eqs. 1-2, deterministic
binarization); Hubara et al., "Binarized Neural Networks", NeurIPS 2016 (sec. 1.3, the
clipped STE "hardtanh" gradient, eq. 4); Rastegari et al., "XNOR-Net", ECCV 2016 (eq. 4:
alpha = mean |W| per output filter, BWN).

Forward (:func:`sign_ste`, built on methods._ops.ste_sign):
    q = alpha * sign(w),  sign(0) = +1 (methods._ops.sign, larq's convention)
    alpha = 1                                  scaling="none"   (BinaryConnect/BNN)
    alpha = mean(|W|) over the whole tensor    scaling="layer"
    alpha_c = mean(|W_c|) over filter c        scaling="channel" (BWN/XNOR)
  alpha is detached (no gradient flows into it), as in the common BWN/XNOR ports.
Backward:
    dq/dw = alpha * 1[|w| <= 1]   clip=True  (clipped STE, BNN eq. 4)
    dq/dw = alpha                 clip=False (identity STE)
Latent weights are clipped to [-1, 1] after every optimizer step when ``latent_clip`` is on
(BinaryConnect, Algorithm 1). Export: codes 0/1 for -1/+1, levels [-1, 1], scale alpha.

Deviation: XNOR-Net's gradient also carries a term through alpha (d alpha / dw); like most
reimplementations we detach alpha. Activations are quantized by the recipe, not here.
Pretrained start (``init.source``): the latent weights are the fp weights (alpha from
them), BN re-estimated for sign(W) alpha. That binarised network is not the fp network: it
cannot keep the fp accuracy at step 0 (ResNet-20 on a CIFAR-10 subset: 39.0% fp, 25.3%
binarised); the tests check the signs instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from methods._ops import per_channel, ste_sign
from methods.base import Method, WeightQuantizer, binary_export, register
from methods.options import option

SCALINGS = ("none", "layer", "channel")


def binary_scale(w: torch.Tensor, scaling: str) -> torch.Tensor:
    """alpha for sign weights: 1, mean|W|, or mean|W| per output channel (shape [C_out])."""
    if scaling == "none":
        return torch.ones((), dtype=w.dtype, device=w.device)
    if scaling == "layer":
        return w.detach().abs().mean()
    return w.detach().abs().reshape(w.shape[0], -1).mean(dim=1)


def sign_ste(w: torch.Tensor, scaling: str = "none", clip: bool = True) -> torch.Tensor:
    """alpha * methods._ops.ste_sign(w, clip): sign weights scaled by the detached alpha of
    ``scaling``, with the clipped (or identity) straight-through gradient; see the module
    docstring."""
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    alpha = binary_scale(w, scaling)
    return ste_sign(w, clip) * per_channel(alpha, w)


@dataclass(frozen=True)
class SteOptions:
    scaling: str = option(
        "none", "sign scale: none (sign STE), mean |W| per layer (BWN) or per channel",
        choices=SCALINGS)
    clip: bool = option(True, "clipped STE 1[|w|<=1]; False = identity gradient")
    latent_clip: bool = option(True, "clip latent weights to [-1, 1] after each step")


class SignWeight(WeightQuantizer):
    def __init__(self, weight: torch.Tensor, bits: int, opt: SteOptions):
        super().__init__(weight, bits)
        self.opt = opt
        self.weight = nn.Parameter(weight.detach().clone())

    def forward(self) -> torch.Tensor:
        return sign_ste(self.weight, self.opt.scaling, self.opt.clip)

    @torch.no_grad()
    def export(self):
        return binary_export(self.weight, binary_scale(self.weight, self.opt.scaling))


@register
class Ste(Method):
    name = "ste"
    display_name = "STE sign (BNN/BWN)"
    bits = frozenset({1})
    Options = SteOptions

    def make_quantizer(self, layer, name):
        return SignWeight(layer.weight, self.w_bits, self.opt)

    @torch.no_grad()
    def after_step(self, model, x, y, progress):
        if self.opt.latent_clip:
            for m in model.modules():
                if isinstance(m, SignWeight):
                    m.weight.clamp_(-1.0, 1.0)
