"""bop: the Binary Optimizer, no latent weights (Helwegen et al., NeurIPS 2019).

Paper: Helwegen, Widdicombe, Geiger, Liu, Cheng, Nusselder, "Latent Weights Do Not Exist:
Rethinking Binarized Neural Network Optimization", NeurIPS 2019 (arXiv 1906.02107), Sec. 4
(the Bop algorithm); reference code: larq ``larq/optimizers.py`` (class Bop,
``_resource_apply_dense``) and plumerai/rethinking-bnn-optimization.

State per binary weight w in {-1, +1} (stored as +-1, a parameter the method updates itself:
it is in ``self_updated``, so the recipe optimizer never sees it, and it has no weight decay):
m, the exponential moving average of the gradient (a buffer, starts at 0).
Forward:
    y = w                          scaling="none" (the paper: BN after the conv)
    y = w * s_c                    scaling="channel": s [C_out] a learned parameter,
                                   initialised to mean |W_c| of the layer's float init; the
                                   recipe's optimizer trains it (a quantizer parameter)
Backward: the ordinary gradient g = dL/dw of the forward above (with scaling, g includes s_c;
its sign, the only thing Bop's flip uses besides |m|, is unchanged for s_c > 0).
Update, in ``after_step`` from g = w.grad (after the recipe optimizer's step; g is cleared
afterwards because the recipe's zero_grad does not reach w):
    m <- (1 - gamma) m + gamma g                          (larq: m + gamma (g - m))
    w <- -w   where |m| > tau and sign(m) == sign(w),  i.e. where w * m > tau
  (:func:`bop_flip`). At exactly w * m == tau nothing flips (the paper's strict inequality);
  larq's one-liner sign(-sign(w m - tau) w) would set such a weight to +1 (its sign(0) = +1),
  a measure-zero difference. m = 0 never flips (tau >= 0).
Schedules of gamma and tau (per step, from the epoch fraction t done):
    constant: gamma, tau
    step:     gamma * gamma_decay^(#milestones <= t), tau * tau_decay^(#milestones <= t)
  (the paper's CIFAR runs: gamma 1e-4 decayed x0.1 every 100 epochs, tau 1e-8 constant).
Init: w = sign(W_float) of the layer's initialisation, sign(0) = +1 (methods._ops.sign); m = 0.
Logged per epoch: ``flip_ratio``, the mean over the epoch's steps of the fraction of binary
weights flipped at that step (larq's FlipRatio metric, averaged over an epoch).
Export: codes 0/1 for -1/+1, levels [-1, 1], scale 1 or s [C_out].
Only 1-bit weights (Method.bits = {1}; other widths are a UserError).

Deviations, plainly: none in the update rule. The paper trains every other parameter with
Adam; here they go to the recipe's optimizer (matched comparison), whatever it is.
Pretrained start (``init.source``): w = sign of the fp weights (s = their channel mean |W|),
m = 0, BN re-estimated. A binarised network: it cannot keep the fp accuracy at step 0
(tests check the signs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from methods._ops import per_channel, sign
from methods.base import Method, Progress, WeightQuantizer, binary_export, register, require
from methods.options import option
from methods.ste import binary_scale

SCALINGS = ("none", "channel")
SCHEDULES = ("constant", "step")


def bop_flip(w: torch.Tensor, m: torch.Tensor, tau: float) -> torch.Tensor:
    """New +-1 weights: -w where |m| > tau and sign(m) == sign(w) (i.e. w * m > tau), else w."""
    return torch.where(w * m > tau, -w, w)


def bop_update_m(m: torch.Tensor, g: torch.Tensor, gamma: float) -> torch.Tensor:
    """The gradient moving average: (1 - gamma) m + gamma g."""
    return (1 - gamma) * m + gamma * g


def schedule_factor(decay: float, milestones: tuple[float, ...], epochs_done: float) -> float:
    return decay ** sum(1 for e in milestones if epochs_done >= e)


@dataclass(frozen=True)
class BopOptions:
    gamma: float = option(1e-4, "adaptivity rate (larq default; paper CIFAR)")
    tau: float = option(1e-8, "flip threshold (larq default; paper CIFAR)")
    scaling: str = option(
        "none", "scale of the binary weights: none, or mean |W| per output channel",
        choices=SCALINGS)
    schedule: str = option(
        "constant", "gamma/tau schedule: constant, or step (decayed at milestones)",
        choices=SCHEDULES)
    milestones: tuple[float, ...] = option((), "epochs at which gamma/tau are multiplied (step)")
    gamma_decay: float = option(0.1, "step: gamma multiplier at each milestone")
    tau_decay: float = option(1.0, "step: tau multiplier at each milestone")


class BopWeight(WeightQuantizer):
    latent = ()
    self_updated = ("weight",)
    state_buffers = ("m",)

    def __init__(self, weight: torch.Tensor, bits: int, scaling: str):
        super().__init__(weight, bits)
        w = weight.detach()
        self.weight = nn.Parameter(sign(w))
        self.register_buffer("m", torch.zeros_like(w))
        self.scaling = scaling
        if scaling == "channel":
            self.scale = nn.Parameter(binary_scale(w, "channel").clone())

    def _scale(self) -> torch.Tensor:
        if self.scaling == "channel":
            return self.scale
        return torch.ones((), dtype=self.weight.dtype, device=self.weight.device)

    def forward(self) -> torch.Tensor:
        if self.scaling == "channel":
            return self.weight * per_channel(self.scale, self.weight)
        return self.weight

    @torch.no_grad()
    def step(self, gamma: float, tau: float) -> torch.Tensor:
        """One Bop update from weight.grad; returns the number of flips (a 0-d tensor)."""
        g = self.weight.grad
        if g is None:
            return torch.zeros((), dtype=torch.int64, device=self.weight.device)
        self.m.copy_(bop_update_m(self.m, g, gamma))
        new = bop_flip(self.weight, self.m, tau)
        flips = (new != self.weight).sum()
        self.weight.copy_(new)
        self.weight.grad = None  # the recipe's zero_grad does not reach self-updated params
        return flips

    @torch.no_grad()
    def export(self):
        return binary_export(self.weight, self._scale().detach().clone())  # w is +-1


@register
class Bop(Method):
    name = "bop"
    display_name = "Bop"
    bits = frozenset({1})
    Options = BopOptions

    def __init__(self, options, w_bits):
        super().__init__(options, w_bits)
        self._flips: torch.Tensor | int = 0
        self._flip_steps = 0

    @classmethod
    def parse_options(cls, raw):
        o = super().parse_options(raw)
        require(0 < o.gamma <= 1, "method.gamma", f"must be in (0, 1] (larq: 1e-4), got {o.gamma}")
        # "not <" keeps the check as it was: a NaN value is not refused
        require(not o.tau < 0, "method.tau", f"must be >= 0 (larq: 1e-8), got {o.tau}")
        require(o.schedule != "step" or o.milestones, "method.milestones",
                "method.schedule=step needs epochs, e.g. --set method.milestones=[100,200]; "
                "or use method.schedule=constant")
        require(o.schedule != "constant" or not o.milestones, "method.milestones",
                "only used with method.schedule=step; add --set method.schedule=step or drop "
                "method.milestones")
        require(list(o.milestones) == sorted(o.milestones), "method.milestones",
                "must be increasing epochs, e.g. [100, 200]")
        require(0 < o.gamma_decay <= 1, "method.gamma_decay",
                f"must be in (0, 1], got {o.gamma_decay}")
        require(o.tau_decay > 0, "method.tau_decay", f"must be > 0, got {o.tau_decay}")
        return o

    def make_quantizer(self, layer, name):
        return BopWeight(layer.weight, self.w_bits, self.opt.scaling)

    def hyper(self, progress: Progress) -> tuple[float, float]:
        """(gamma, tau) at this step."""
        o = self.opt
        if o.schedule == "constant":
            return o.gamma, o.tau
        t = progress.step / progress.steps_per_epoch
        return (o.gamma * schedule_factor(o.gamma_decay, o.milestones, t),
                o.tau * schedule_factor(o.tau_decay, o.milestones, t))

    def on_epoch_start(self, model, progress):
        self._flips, self._flip_steps = 0, 0

    def after_step(self, model, x, y, progress):
        gamma, tau = self.hyper(progress)
        flips, total = 0, 0
        for m in model.modules():
            if isinstance(m, BopWeight):
                flips = flips + m.step(gamma, tau)
                total += m.weight.numel()
        if total:
            self._flips = self._flips + flips / total  # tensor sum: no device sync per step
            self._flip_steps += 1

    def scalars(self, model, run):
        if not self._flip_steps:
            return {"flip_ratio": float("nan")}
        return {"flip_ratio": float(self._flips) / self._flip_steps}
