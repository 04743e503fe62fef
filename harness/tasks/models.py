"""What every task's networks share: the registry entry and the quantization policy.

A task's networks are :class:`Model` entries in its own ``models.py`` (``MODELS``: name,
one-line description, factory, the ``model.*`` options and task options it reads). A factory
builds a plain float network from (num_classes, in_channels, image_size, width, act). The
quantization policy, shared by every method of a study, then picks the layers a method takes
over: by default every conv/linear except the first conv and the last linear; 1x1
(shortcut/downsample) convs are included unless ``model.quantize_shortcut=false``; a network
may name its own first and last parts (``policy_first``/``policy_last``, the SR networks'
head, upsampler and tail).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from harness.errors import require
from methods.act import make_act_quantizer, nonlinearity
from methods.base import QLayer, set_module

MAX_PARAMS = 10**9  # parameters of a float network (4 GB of float32 weights; README, Limits)


@dataclass(frozen=True)
class Model:
    """One registry entry. Calling it builds the float network:
    ``factory(num_classes, in_channels, image_size, width, act, **options)``."""

    name: str
    description: str                       # one line, for the CLI's help
    factory: Callable[..., nn.Module]
    options: tuple[str, ...] = ()          # model.* keys passed to the factory by name
    task_options: tuple[str, ...] = ()     # keys of the task's config section, likewise

    def __call__(self, num_classes: int, in_channels: int, image_size: tuple[int, int],
                 width: float, act: type[nn.Module], **kwargs) -> nn.Module:
        return self.factory(num_classes, in_channels, image_size, width, act, **kwargs)


def check(mcfg, models: dict[str, Model]) -> None:
    """A ``model`` section against a task's registry (the name is checked by the task)."""
    # "not <=" keeps the check as it was: a NaN width is not refused here
    require(not mcfg.width <= 0, "model.width", f"must be > 0, got {mcfg.width}")
    require(mcfg.name != "resnet18" or mcfg.width == 1.0, "model.width",
            "resnet18 (torchvision) supports only width 1.0")
    takes = models[mcfg.name].options   # (block and shortcut values: config's choices)
    defaults = type(mcfg)()
    for key in ("block", "shortcut"):
        require(key in takes or getattr(mcfg, key) == getattr(defaults, key), f"model.{key}",
                f"{mcfg.name} has no {key} option; drop it (models with one: "
                f"{[n for n, m in models.items() if key in m.options]})")


# --------------------------------------------------------------------------- policy

def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def policy_layers(model: nn.Module, mcfg) -> list[str]:
    """Names of the conv/linear layers the quantization policy hands to the method.

    "First" and "last" are the first conv and the last linear layer, unless the model names
    its own (``policy_first``/``policy_last``: submodule prefixes; the SR networks' head, and
    their upsampler and tail)."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    convs = [n for n, m in layers if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in layers if isinstance(m, nn.Linear)]
    first = getattr(model, "policy_first", tuple(convs[:1]))
    last = getattr(model, "policy_last", tuple(linears[-1:]))
    chosen = []
    for name, m in layers:
        if _under(name, first) and not mcfg.quantize_first:
            continue
        if _under(name, last) and not mcfg.quantize_last:
            continue
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and not mcfg.quantize_shortcut:
            continue
        chosen.append(name)
    return chosen


def build(cfg, models: dict[str, Model], num_classes: int, in_channels: int,
          image_size: tuple[int, int], method=None) -> nn.Module:
    """The float network ``models[cfg.model.name]``, with the policy's layers replaced by
    QLayers of ``method``.

    ``method=None`` builds the plain float network (used to rebuild a deployed export).
    """
    act = nonlinearity(cfg.a_bits)
    entry = models[cfg.model.name]

    def make() -> nn.Module:
        return entry(num_classes, in_channels, image_size, cfg.model.width, act,
                     **{k: getattr(cfg.task_options, k) for k in entry.task_options},
                     **{k: getattr(cfg.model, k) for k in entry.options})

    with torch.device("meta"):  # counted before a byte is allocated
        n = sum(p.numel() for p in make().parameters())
    require(n <= MAX_PARAMS, "model.width", f"{cfg.model.name} at width {cfg.model.width:g} "
            f"has {n:,} parameters, over the limit of {MAX_PARAMS:,}; use a smaller width")
    model = make()
    if method is None:
        return model
    for name in policy_layers(model, cfg.model):
        layer = model.get_submodule(name)
        wq = method.make_quantizer(layer, name)
        set_module(model, name, QLayer(layer, wq, make_act_quantizer(
            cfg.a_bits, cfg.a_quant, cfg.pact_init)))
    return model
