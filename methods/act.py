"""Activation quantizers, shared by every weight method of a comparison (set by the recipe).

They quantize the *input* of each quantized layer (QLayer.act), so in a matched study every
method sees the same activation quantizer.

a_bits = 32: no quantization.

a_bits = 1: sign with clipped STE (BNN, Courbariaux et al. 2016, eq. 4; Hubara et al. 2016),
  methods._ops.ste_sign(x, clip=True):
    forward  q = sign(x), sign(0) = +1 (larq's convention);
    backward dq/dx = 1[|x| <= 1].
  The network's nonlinearity is then Hardtanh instead of ReLU (see :func:`nonlinearity`):
  after a ReLU every input would be >= 0 and sign() would be constant. This is the BNN
  arrangement (BN -> hardtanh -> sign -> conv).

a_bits = k > 1, ``a_quant = "pact"`` (Choi et al. 2018, eqs. 1-3): alpha learned per layer,
    forward  y = clip(x, 0, alpha); q = round(y (2^k - 1) / alpha) alpha / (2^k - 1)
    backward dq/dx = 1[0 <= x < alpha]; dq/dalpha = 1[x >= alpha] (STE through round).
  alpha starts at ``pact_init`` (paper: 10). Weight decay on alpha (the paper's L2 term)
  follows the recipe's treatment of quantizer parameters (``optim.wd_exclude_quant``).

a_bits = k > 1, ``a_quant = "dorefa"`` (Zhou et al. 2016, eq. 11):
    forward  q = round((2^k - 1) clip(x, 0, 1)) / (2^k - 1)
    backward dq/dx = 1[0 <= x <= 1].

Export: :func:`export_form` gives each quantizer's forward as a module of plain tensor ops
(no autograd.Function), computed by the same functions as the training forward, for ONNX.
"""
from __future__ import annotations

import torch
from torch import nn

from methods._ops import sign, ste_sign

A_QUANT = ("pact", "dorefa")


def sign_act(x: torch.Tensor) -> torch.Tensor:
    """sign(x) with sign(0)=+1; gradient 1[|x| <= 1] (clipped STE, methods._ops.ste_sign)."""
    return ste_sign(x, clip=True)


def pact_forward(x: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:
    """PACT's forward in plain tensor ops (the training forward and the export use it)."""
    n = 2 ** bits - 1
    y = torch.minimum(torch.clamp(x, min=0), alpha)
    return torch.round(y * (n / alpha)) * (alpha / n)


def dorefa_act_forward(x: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa's activation forward in plain tensor ops (training forward and export)."""
    n = 2 ** bits - 1
    return torch.round(torch.clamp(x, 0, 1) * n) / n


class _Pact(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, bits):
        ctx.save_for_backward(x, alpha)
        return pact_forward(x, alpha, bits)

    @staticmethod
    def backward(ctx, g):
        x, alpha = ctx.saved_tensors
        inside = (x >= 0) & (x < alpha)
        gx = g * inside.to(g.dtype)
        galpha = (g * (x >= alpha).to(g.dtype)).sum().reshape(alpha.shape)
        return gx, galpha, None


def pact_quantize(x: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:
    """PACT: round(clip(x, 0, alpha) (2^k-1)/alpha) alpha/(2^k-1); see module docstring."""
    return _Pact.apply(x, alpha, bits)


class _DorefaAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bits):
        ctx.save_for_backward(x)
        return dorefa_act_forward(x, bits)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ((x >= 0) & (x <= 1)).to(g.dtype), None


def dorefa_act(x: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa activations: round((2^k-1) clip(x,0,1))/(2^k-1); gradient 1 on [0, 1]."""
    return _DorefaAct.apply(x, bits)


class SignAct(nn.Module):
    def forward(self, x):
        return sign_act(x)


class PactAct(nn.Module):
    def __init__(self, bits: int, init: float):
        super().__init__()
        self.bits = bits
        self.alpha = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x):
        return pact_quantize(x, self.alpha.to(x.dtype), self.bits)

    def extra_repr(self):
        return f"bits={self.bits}"


class DorefaAct(nn.Module):
    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, x):
        return dorefa_act(x, self.bits)

    def extra_repr(self):
        return f"bits={self.bits}"


def make_act_quantizer(a_bits: int, a_quant: str, pact_init: float = 10.0) -> nn.Module:
    if a_bits == 32:
        return nn.Identity()
    if a_bits == 1:
        return SignAct()
    if a_quant == "pact":
        return PactAct(a_bits, pact_init)
    return DorefaAct(a_bits)


# --------------------------------------------------------------------------- export forms

class PlainSign(nn.Module):
    """SignAct's forward without an autograd.Function (ONNX: GreaterOrEqual + Where)."""

    def forward(self, x):
        return sign(x)


class PlainPact(nn.Module):
    """PactAct's forward without an autograd.Function; alpha is a constant buffer."""

    def __init__(self, alpha: torch.Tensor, bits: int):
        super().__init__()
        self.bits = bits
        self.register_buffer("alpha", alpha.detach().clone())

    def forward(self, x):
        return pact_forward(x, self.alpha.to(x.dtype), self.bits)


class PlainDorefa(nn.Module):
    """DorefaAct's forward without an autograd.Function."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, x):
        return dorefa_act_forward(x, self.bits)


def export_form(act: nn.Module) -> nn.Module | None:
    """The same forward as ``act`` in plain tensor ops (no autograd.Function, which exporters
    cannot translate), computed by the same functions, so the two agree bit for bit; None
    for a module that is not one of the recipe's activation quantizers."""
    if type(act) is nn.Identity:
        return nn.Identity()
    if type(act) is SignAct:
        return PlainSign()
    if type(act) is PactAct:
        return PlainPact(act.alpha, act.bits)
    if type(act) is DorefaAct:
        return PlainDorefa(act.bits)
    return None


def nonlinearity(a_bits: int) -> type[nn.Module]:
    """The network's activation function for a given activation bit width."""
    return nn.Hardtanh if a_bits == 1 else nn.ReLU

