"""Quantizer primitives shared by the methods, each written once (after larq's quantizers.py).

Every method file builds on these; none of them registers a method (``load_all()`` skips
modules whose name starts with ``_``).

    sign(x)              forward  +1 where x >= 0, else -1 (sign(0) = +1, larq's convention)
                         backward none: a constant for autograd
    per_channel(v, like) a per-output-channel vector [C_out] shaped [C_out, 1, ...] to broadcast
                         against a weight ``like``; a 0-d tensor is returned as it is
    ste_sign(x, clip)    forward  sign(x)
                         backward g * 1[|x| <= 1]  (clip=True: clipped STE, BNN hardtanh)
                                  g                (clip=False: identity STE)
    ste_round(x)         forward  round(x) (torch.round: half to even)
                         backward g (identity STE)
"""
from __future__ import annotations

import torch


def sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0, else -1 (sign(0) = +1), in x's dtype; no gradient flows through it."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def per_channel(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``v`` [C_out] reshaped to [C_out, 1, ..., 1] (``like.dim()`` axes) so that it scales
    each output channel of the weight ``like``; a 0-d ``v`` (one value per tensor) as it is."""
    return v if v.dim() == 0 else v.reshape(-1, *([1] * (like.dim() - 1)))


class _SteSign(torch.autograd.Function):
    """sign(x) forward; gradient g * 1[|x| <= 1] (clip) or g (no clip)."""

    @staticmethod
    def forward(ctx, x, clip):
        ctx.clip = clip
        if clip:
            ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, g):
        if ctx.clip:
            (x,) = ctx.saved_tensors
            g = g * (x.abs() <= 1).to(g.dtype)
        return g, None


def ste_sign(x: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """sign(x) (sign(0) = +1) with a straight-through gradient (larq's ``ste_sign``):

    forward  q = sign(x)
    backward dq/dx = 1[|x| <= 1] when ``clip`` (BNN, Hubara et al. 2016, eq. 4), else 1.
    """
    return _SteSign.apply(x, clip)


class _SteRound(torch.autograd.Function):
    """round(x) forward; identity gradient."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """round(x) (half to even) with the identity straight-through gradient: dq/dx = 1."""
    return _SteRound.apply(x)
