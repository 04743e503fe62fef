"""hashing: binary weights trained with a quantization loss (an adaptation, after Zheng et al.).

Source: Zheng, Deng, Huang, "Binarized Neural Networks for Resource-Efficient Hashing with
Minimizing Quantization Loss", IJCAI 2019, pp. 1032-1040. ADAPTATION: the paper's full text
was not available to us; all we could verify is its abstract (a quantization loss between
the binary weights and learned real values, a binary-entropy term minimised so that plain
SGD can be used, quantization losses on weights and activations). No equation numbers can be
cited. What follows is our reading, built from that abstract and the BWN/BNN rules of
methods/ste.py; every term is configurable. Numbers from this method are not the paper's.

Forward (per quantized layer l, output channel c; sign(0) = +1 as in larq, methods._ops.sign):
    W_b = alpha_c * sign(W)
    alpha_c = mean |W_c| over the filter, detached          alpha="mean" (BWN/XNOR)
    alpha_c = a learned parameter, initialised to mean|W_c|  alpha="learned"
Backward (methods._ops.ste_sign):
    dW_b/dW = alpha_c * 1[|W| <= 1]       clipped STE (BNN hardtanh gradient), clip=True
    dW_b/dW = alpha_c                     identity STE, clip=False
    dW_b/dalpha_c = sign(W)               alpha="learned" only
Loss added to the task loss (the ``loss()`` hook):
    lam * sum_l ||W_l - alpha_l sign(W_l)||^2                      (:func:`quantization_loss`)
  + mu  * sum_l sum_i H(sigmoid(W_i / t)),  H(p) = -p ln p - (1-p) ln(1-p)   (nats)
  The quantization term is differentiated with sign() as a constant (its derivative is
  0 almost everywhere): d/dW = 2 lam (W - alpha sign W); for a learned alpha,
  d/dalpha_c = -2 lam sum_i (|W_i| - alpha_c). With alpha="mean" the gradient through
  mean|W| would be zero anyway (sum_i (|W_i| - alpha_c) = 0), so detaching changes nothing.
  Minimising the entropy term pushes latent weights away from 0 (H is largest at W = 0);
  t is in weight units. mu = 0 (default) switches it off; lam = 0 leaves plain BWN with a
  clipped STE.
Logged per epoch (metrics.csv): ``quant_loss``, the mean over the epoch's training steps of
sum_l ||W_l - alpha_l sign(W_l)||^2 (without lam), and ``entropy_loss`` likewise (sum of H,
without mu) when mu > 0.
Export: codes 0/1 for -1/+1, levels [-1, 1], scale alpha [C_out].

Deviations / choices, plainly: the quantization loss on activations that the abstract
mentions is not implemented (activations are the recipe's, shared by all methods); the loss
is a plain sum over weights (no per-layer normalisation); the entropy temperature t and the
default lam are our choices, not the paper's.
Pretrained start (``init.source``): W = the fp weights (alpha from them), BN re-estimated;
a binarised network that cannot keep the fp accuracy at step 0 (tests check the signs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from methods._ops import per_channel, sign, ste_sign
from methods.base import Method, WeightQuantizer, binary_export, register, require
from methods.options import option
from methods.ste import binary_scale

ALPHAS = ("mean", "learned")


def quantization_loss(w: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """||w - alpha sign(w)||^2 summed over all entries; alpha is per output channel [C_out]
    (or a 0-d tensor). sign(0) = +1; sign() is a constant for autograd, alpha is not."""
    return (w - per_channel(alpha, w) * sign(w)).pow(2).sum()


def binary_entropy(w: torch.Tensor, t: float) -> torch.Tensor:
    """sum_i H(sigmoid(w_i / t)) in nats, computed stably as softplus(z) - z sigmoid(z)."""
    z = w / t
    return (F.softplus(z) - z * torch.sigmoid(z)).sum()


@dataclass(frozen=True)
class HashingOptions:
    lam: float = option(1e-3, 'weight of the quantization loss ("lambda")')
    alpha: str = option(
        "mean", "code scale alpha: mean |W| per layer, or a learned parameter", choices=ALPHAS)
    entropy: float = option(0.0, "weight mu of the binary-entropy term; 0 = off")
    entropy_temp: float = option(0.05, "t in H(sigmoid(W / t)), weight units")
    clip: bool = option(True, "clipped STE 1[|W| <= 1]; False = identity gradient")


class HashWeight(WeightQuantizer):
    def __init__(self, weight: torch.Tensor, bits: int, opt: HashingOptions):
        super().__init__(weight, bits)
        self.opt = opt
        self.weight = nn.Parameter(weight.detach().clone())
        if opt.alpha == "learned":
            self.alpha = nn.Parameter(binary_scale(self.weight, "channel").clone())

    def scale(self) -> torch.Tensor:
        """alpha [C_out]: the learned parameter or the detached mean |W_c|."""
        if self.opt.alpha == "learned":
            return self.alpha
        return binary_scale(self.weight, "channel")

    def forward(self) -> torch.Tensor:
        return ste_sign(self.weight, self.opt.clip) * per_channel(self.scale(), self.weight)

    def quantization_loss(self) -> torch.Tensor:
        return quantization_loss(self.weight, self.scale())

    @torch.no_grad()
    def export(self):
        return binary_export(self.weight, self.scale().detach().clone())


@register
class Hashing(Method):
    name = "hashing"
    display_name = "Hashing + quant. loss"
    bits = frozenset({1})
    Options = HashingOptions

    def __init__(self, options, w_bits):
        super().__init__(options, w_bits)
        self._sums: dict[str, torch.Tensor] = {}
        self._steps = 0

    @classmethod
    def parse_options(cls, raw):
        opt = super().parse_options(raw)
        # "not <" keeps the check as it was: a NaN value is not refused
        require(not opt.lam < 0, "method.lam",
                f"must be >= 0 (0 = no quantization loss), got {opt.lam}")
        require(not opt.entropy < 0, "method.entropy", f"must be >= 0 (0 = off), got {opt.entropy}")
        require(not opt.entropy_temp <= 0, "method.entropy_temp",
                f"must be > 0, got {opt.entropy_temp}")
        return opt

    def make_quantizer(self, layer, name):
        return HashWeight(layer.weight, self.w_bits, self.opt)

    def _quantizers(self, model):
        return [m for m in model.modules() if isinstance(m, HashWeight)]

    def on_epoch_start(self, model, progress):
        self._sums, self._steps = {}, 0

    def loss(self, model):
        wqs = self._quantizers(model)
        if not wqs:
            return None
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.opt.lam > 0):
            q = sum(m.quantization_loss() for m in wqs)
        terms = {"quant_loss": q}
        total = self.opt.lam * q if self.opt.lam > 0 else None
        if self.opt.entropy > 0:
            h = sum(binary_entropy(m.weight, self.opt.entropy_temp) for m in wqs)
            terms["entropy_loss"] = h
            total = self.opt.entropy * h if total is None else total + self.opt.entropy * h
        for k, v in terms.items():  # summed as tensors: no device sync per step
            self._sums[k] = self._sums.get(k, 0) + v.detach().double()
        self._steps += 1
        return total

    def scalars(self, model, run):
        names = ["quant_loss"] + (["entropy_loss"] if self.opt.entropy > 0 else [])
        return {k: float(self._sums[k]) / self._steps if self._steps and k in self._sums
                else float("nan") for k in names}
