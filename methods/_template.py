"""template: copy this file to methods/<name>.py to add a method (files starting with "_" are
not registered, so this one never appears in the registry). In your copy: rename the class,
set ``name = "<name>"`` (the file's name: keeping "ternary" collides with this template's own
test), add ``@register`` above the class, rewrite this docstring, and add your method's bad
options to BAD in tests/test_method_options.py (the test says where).

THE DOCSTRING RULE. Every method file opens with: the paper (authors, title, venue, arXiv id),
the equation numbers it implements, the exact forward rule, the exact backward rule (what the
gradient of every parameter is, straight-through or not), the export (codes, levels, scale),
and every deviation from the paper, said plainly. The registry-driven tests check that the
docstring states a forward and a backward rule.

This example: ternary weights with a per-layer threshold (after Li & Liu, "Ternary Weight
Networks", 2016, eq. 5-6, simplified): delta = 0.7 mean|W|, W_t = alpha * t,
t = sign(W) where |W| > delta else 0, alpha = mean |W| over {|W| > delta} (detached).
Forward: W_t as above. Backward: identity straight-through estimator, dW_t/dW = 1.
Export: codes 0/1/2 for -1/0/+1, levels [-1, 0, 1], scale alpha.
Deviations: alpha is detached; the paper's per-layer derivation of 0.7 is used as is.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.errors import require
from methods._ops import sign
from methods.base import Method, WeightQuantizer
from methods.options import option

# 1. Options: a frozen dataclass; each field is a `method.<option>` key declared with
#    `option(default, help, choices=...)`: `config --method` lists the help, the choices are
#    checked for you; cross-option checks go in parse_options.


@dataclass(frozen=True)
class TernaryOptions:
    threshold: float = option(0.7, "delta = threshold * mean|W|")
    scale: str = option("layer", "ternary scale: mean |W| of the kept weights per layer, or none",
                        choices=("layer", "none"))


# 2. The pure function with its gradient (here: straight through, written as x + (q - x)).

def ternary(w: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(t in {-1, 0, 1}, alpha) for a weight tensor (see the module docstring)."""
    delta = threshold * w.detach().abs().mean()
    t = torch.where(w.detach().abs() > delta, sign(w.detach()), torch.zeros_like(w))
    kept = w.detach().abs()[t != 0]
    alpha = kept.mean() if kept.numel() else w.detach().abs().mean()
    return t, alpha


# 3. The per-layer state: forward() gives the training weight, export() the deployed form
#    as codes/levels/scale (methods.base.decode rebuilds the weight from exactly these, so the
#    deployed network and the export agree bit for bit). Parameters named in `latent` are
#    latent weights (weight decay as weights); others are quantizer parameters.

class TernaryWeight(WeightQuantizer):
    def __init__(self, weight: torch.Tensor, bits: int, opt: TernaryOptions):
        super().__init__(weight, bits)
        self.opt = opt
        self.weight = nn.Parameter(weight.detach().clone())

    def _scale(self, alpha: torch.Tensor) -> torch.Tensor:
        return alpha if self.opt.scale == "layer" else torch.ones_like(alpha)

    def forward(self) -> torch.Tensor:
        t, alpha = ternary(self.weight, self.opt.threshold)
        q = t * self._scale(alpha)
        return self.weight + (q - self.weight).detach()  # identity STE

    @torch.no_grad()
    def export(self) -> dict[str, torch.Tensor]:
        t, alpha = ternary(self.weight, self.opt.threshold)
        return {"codes": (t + 1).to(torch.uint8),
                "levels": torch.tensor([-1.0, 0.0, 1.0], dtype=self.weight.dtype,
                                       device=self.weight.device),
                "scale": self._scale(alpha).clone()}


# 4. The method: its name, the weight bits it supports (checked before any work), its options,
#    and the hooks it needs (every hook in methods/base.py defaults to doing nothing). Add
#    @register (from methods.base) above the class in your copy; this template stays
#    unregistered.

class Ternary(Method):
    name = "ternary"            # RENAME in your copy: the file's name, methods/<name>.py
    display_name = "TWN (ternary)"
    bits = frozenset({2})       # three levels need 2 bits
    default_bits = 2
    Options = TernaryOptions

    @classmethod
    def parse_options(cls, raw):
        opt = super().parse_options(raw)
        require(0 < opt.threshold < 2, "method.threshold",
                f"must be in (0, 2) (paper: 0.7), got {opt.threshold}")
        return opt

    def make_quantizer(self, layer: nn.Module, name: str) -> TernaryWeight:
        return TernaryWeight(layer.weight, self.w_bits, self.opt)
