"""lsq: Learned Step Size Quantization (Esser et al., ICLR 2020).

Paper: Esser, McKinstry, Bablani, Appuswamy, Modha, "Learned Step Size Quantization",
ICLR 2020 (arXiv 1902.08153): eqs. 1-2 (quantizer), eq. 3 (gradient of the step size),
Sec. 2.2 (step-size gradient scale), Sec. 2.1/3 (initialisation).

Forward (eqs. 1-2), b-bit signed weights: Q_N = 2^(b-1), Q_P = 2^(b-1) - 1
(unsigned data, e.g. activations: Q_N = 0, Q_P = 2^b - 1):
    q   = round(clip(v / s, -Q_N, Q_P))          (torch.round: half to even)
    v_q = q * s
Backward (STE through round, every other operation differentiated normally):
    dv_q/dv = 1 if -Q_N < v/s < Q_P, else 0
    dv_q/ds = -v/s + round(v/s)   if -Q_N < v/s < Q_P            (eq. 3)
              -Q_N                if v/s <= -Q_N
               Q_P                if v/s >= Q_P
    and the gradient of s is multiplied by g = 1 / sqrt(N * Q_P) (Sec. 2.2), N the number
    of weights sharing the step (the whole layer; one output channel with
    granularity="channel").
Step size: s is a quantizer parameter (not latent; weight decay per
``optim.wd_exclude_quant``) trained by the recipe's optimizer, initialised from the layer's
weights as s = 2 mean|v| / sqrt(Q_P) (per channel: the channel's mean).
Export: codes = q + Q_N (0 .. 2^b - 1), levels = arange(-Q_N, Q_P + 1), scale = s (0-d, or
[C_out] per channel).
Bit widths: 2..8. At 1 bit Q_P = 2^0 - 1 = 0: the grid {-s, 0} has no positive level and the
gradient scale 1/sqrt(N Q_P) is infinite, so LSQ is not defined there; w_bits=1 is a clear
UserError (use ste/dorefa/... for binary weights).

Deviations, plainly: the paper starts from a trained full-precision network and keeps the
first/last layers at 8 bits; here s is initialised from the layer's current (random-init)
weights, and which layers are quantized is the recipe's policy shared by all methods. The
in-range test uses strict inequalities on both sides (the paper's eq. 3 partition; a port
built on torch.clamp would pass the weight gradient at v/s exactly -Q_N or Q_P). Nothing
keeps s positive (as in the paper).
Pretrained start (``init.source``): v = the fp weights, s initialised from them by the
paper's rule, BN re-estimated for v_q: at >= 4 bits within 2 points of the fp accuracy at
step 0 (tested); at 2 bits not (29.0% for 39.0% fp, ResNet-20 on a CIFAR-10 subset).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from methods._ops import per_channel
from methods.base import Method, WeightQuantizer, code_dtype, register
from methods.options import option

GRANULARITIES = ("layer", "channel")


def lsq_range(bits: int, signed: bool = True) -> tuple[int, int]:
    """(Q_N, Q_P) for b bits."""
    if signed:
        return 2 ** (bits - 1), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


class _Lsq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, step, qn, qp, g):
        s = per_channel(step, v)
        x = v / s
        q = torch.round(torch.clamp(x, -qn, qp))
        ctx.save_for_backward(x, q)
        ctx.meta = (qn, qp, g, step.shape)
        return q * s

    @staticmethod
    def backward(ctx, grad):
        x, q = ctx.saved_tensors
        qn, qp, g, step_shape = ctx.meta
        inside = (x > -qn) & (x < qp)
        gv = grad * inside.to(grad.dtype)
        ds = torch.where(inside, q - x, q)  # outside the range q is -Q_N or Q_P
        gs = grad * ds
        gs = gs.sum() if len(step_shape) == 0 else gs.reshape(gs.shape[0], -1).sum(1)
        return gv, (gs * g).reshape(step_shape), None, None, None


def lsq_quantize(v: torch.Tensor, step: torch.Tensor, bits: int, signed: bool = True,
                 grad_scale: float | None = None) -> torch.Tensor:
    """LSQ: round(clip(v/s, -Q_N, Q_P)) * s with the paper's gradients (module docstring).

    step: 0-d (per tensor) or [v.shape[0]] (per output channel). grad_scale: the factor g on
    the step's gradient; None = the paper's 1/sqrt(N Q_P), N = entries per step.
    """
    qn, qp = lsq_range(bits, signed)
    if qp <= 0:
        raise ValueError(f"LSQ needs Q_P > 0; {bits}-bit {'signed' if signed else 'unsigned'} "
                         "has Q_P = 0")
    if grad_scale is None:
        n = v.numel() if step.dim() == 0 else v.numel() // v.shape[0]
        grad_scale = 1.0 / (n * qp) ** 0.5
    return _Lsq.apply(v, step, qn, qp, grad_scale)


def lsq_init(v: torch.Tensor, bits: int, per_channel: bool, signed: bool = True) -> torch.Tensor:
    """s0 = 2 mean|v| / sqrt(Q_P) (per output channel when ``per_channel``)."""
    _, qp = lsq_range(bits, signed)
    a = v.detach().abs()
    mean = a.reshape(a.shape[0], -1).mean(1) if per_channel else a.mean()
    return 2 * mean / qp ** 0.5


@dataclass(frozen=True)
class LsqOptions:
    granularity: str = option(
        "layer", "one step size per layer, or per output channel", choices=GRANULARITIES)
    grad_scale: bool = option(True, "the paper's g = 1/sqrt(N Q_P); False = g = 1")


class LsqWeight(WeightQuantizer):
    def __init__(self, weight: torch.Tensor, bits: int, opt: LsqOptions):
        super().__init__(weight, bits)
        self.opt = opt
        self.weight = nn.Parameter(weight.detach().clone())
        self.step = nn.Parameter(lsq_init(weight, bits, opt.granularity == "channel"))

    def forward(self) -> torch.Tensor:
        return lsq_quantize(self.weight, self.step, self.bits, True,
                            None if self.opt.grad_scale else 1.0)

    @torch.no_grad()
    def export(self):
        qn, qp = lsq_range(self.bits)
        w, s = self.weight, self.step
        q = torch.round(torch.clamp(w / per_channel(s, w), -qn, qp))
        return {"codes": (q + qn).to(code_dtype(qn + qp + 1)),
                "levels": torch.arange(-qn, qp + 1, dtype=w.dtype, device=w.device),
                "scale": s.detach().clone()}


@register
class Lsq(Method):
    name = "lsq"
    display_name = "LSQ"
    bits = frozenset(range(2, 9))
    default_bits = 2
    Options = LsqOptions

    def make_quantizer(self, layer, name):
        return LsqWeight(layer.weight, self.w_bits, self.opt)
