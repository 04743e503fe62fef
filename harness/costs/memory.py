"""What a run costs in memory: bytes of parameters and of optimizer state, in total and for
the method's own (quantizer) parameters. The summary of every run records these figures.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from methods.base import WeightQuantizer


def tensor_bytes(tensors: Iterable) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def optimizer_state_bytes(opt: torch.optim.Optimizer, params=None) -> int:
    """Bytes of the optimizer's per-parameter state (momentum, Adam moments), optionally
    only for ``params``."""
    ids = None if params is None else {id(p) for p in params}
    return sum(tensor_bytes(s.values()) for p, s in opt.state.items()
               if ids is None or id(p) in ids)


def method_params(model: nn.Module) -> list[torch.Tensor]:
    """Parameters owned by the method's per-layer quantizers (latent weights, logits, scales)."""
    return [p for m in model.modules() if isinstance(m, WeightQuantizer) for p in m.parameters()]


def method_state_buffer_bytes(model: nn.Module) -> int:
    """Bytes of buffers a method keeps as optimizer-like state (e.g. Bop's gradient average)."""
    return tensor_bytes(getattr(m, n) for m in model.modules()
                        if isinstance(m, WeightQuantizer) for n in m.state_buffers)


def memory_costs(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, int]:
    """The summary's byte counts: all parameters, the method's, and their optimizer state
    (a method's optimizer-like buffers counted as optimizer state)."""
    mine = method_params(model)
    buffers = method_state_buffer_bytes(model)
    return {"param_bytes": tensor_bytes(model.parameters()),
            "method_param_bytes": tensor_bytes(mine),
            "optimizer_state_bytes": optimizer_state_bytes(opt) + buffers,
            "method_optimizer_state_bytes": optimizer_state_bytes(opt, mine) + buffers}
