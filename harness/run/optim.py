"""The recipe's optimizer: parameter groups (weights, norm parameters and biases, quantizer
parameters), the optimizer itself and the learning-rate schedule, shared by every method."""
from __future__ import annotations

import math

import torch
from torch import nn

from harness.config import OptimConfig
from methods.act import PactAct
from methods.base import WeightQuantizer


def param_kind(module: nn.Module, pname: str) -> str:
    """'weight', 'bn' (norm parameters and biases) or 'quant' (quantizer parameters)."""
    if isinstance(module, WeightQuantizer):
        return "weight" if pname in module.latent else "quant"
    if isinstance(module, PactAct):
        return "quant"
    if isinstance(module, nn.modules.batchnorm._NormBase) or pname == "bias":
        return "bn"
    return "weight"


def default_param_groups(model: nn.Module, ocfg: OptimConfig) -> list[dict]:
    excluded = {id(getattr(m, n)) for m in model.modules() if isinstance(m, WeightQuantizer)
                for n in m.self_updated}
    groups: dict[str, list] = {"weight": [], "bn": [], "quant": []}
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if p.requires_grad and id(p) not in excluded:
                groups[param_kind(module, pname)].append(p)
    wd = {"weight": ocfg.weight_decay,
          "bn": 0.0 if ocfg.wd_exclude_bn else ocfg.weight_decay,
          "quant": 0.0 if ocfg.wd_exclude_quant else ocfg.weight_decay}
    lr = {"weight": ocfg.lr, "bn": ocfg.lr, "quant": ocfg.lr * ocfg.quant_lr_scale}
    return [{"params": ps, "weight_decay": wd[k], "lr": lr[k], "kind": k}
            for k, ps in groups.items() if ps]


def make_optimizer(groups: list[dict], ocfg: OptimConfig) -> torch.optim.Optimizer:
    if ocfg.name == "sgd":
        return torch.optim.SGD(groups, lr=ocfg.lr, momentum=ocfg.momentum,
                               nesterov=ocfg.nesterov and ocfg.momentum > 0)
    if ocfg.name == "adamw":  # decoupled weight decay (Loshchilov & Hutter)
        return torch.optim.AdamW(groups, lr=ocfg.lr, betas=tuple(ocfg.betas))
    return torch.optim.Adam(groups, lr=ocfg.lr, betas=tuple(ocfg.betas))


def lr_factor(step: int, steps_per_epoch: int, epochs: int, ocfg: OptimConfig) -> float:
    """Multiplier of the base LR for optimizer step ``step`` (per-step schedules)."""
    t = step / steps_per_epoch  # epochs done, fractional
    warm = ocfg.warmup_epochs
    if warm > 0 and t < warm:
        return (step + 1) / (warm * steps_per_epoch)
    if ocfg.schedule == "cosine":
        u = (t - warm) / max(1e-12, epochs - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, u)))
    if ocfg.schedule == "step":
        return ocfg.gamma ** sum(1 for m in ocfg.milestones if t >= m)
    return 1.0
