"""Operation counts and model size of a deployed network, and FLOPs of a training step.

Inference (per model and W/A cell, from the config and the input shape alone):

    MACs      multiply-accumulates of every conv and linear layer for one image, counted by
              torch.utils.flop_counter.FlopCounterMode (which counts 2 FLOPs per MAC; we halve
              it). Batch norm, pooling, additions and activation quantizers are not counted,
              as in the papers below.
    BOPs      sum over quantized layers of MACs x w_bits x a_bits (a_bits = 32 when the layer's
              input is not quantized), the binary-operation count of Bi-Real Net (Liu et al.
              2018, sec. 4.3) and ReActNet (Liu et al. 2020).
    FLOPs     MACs of the full-precision layers (the papers' convention: one MAC = one FLOP;
              the first conv and the last linear under the default policy, everything for fp).
    OPs       BOPs / 64 + FLOPs (same papers).
    size      bits of the deployed model: quantized weights at w_bits, their levels and
              scales, and every other tensor inference needs (full-precision weights, biases,
              batch-norm statistics and affine parameters, PACT clip values) at 32 bits; the
              method's export decides the shapes of levels and scales, so the model is built
              with the method (its untrained initial state; the shapes do not change in
              training). ``harness.packing`` stores exactly this payload.

Training (per run, measured once at its start by :func:`count_training_flops`): FLOPs
(torch's convention, 2 per MAC, so x2 the inference MACs) of ``TRAIN_STEPS`` real training
steps of the run's own model, method and optimizer on copies (forward, backward, the
optimizer step and every method hook, so the extra no-grad forward of SLB's State BN and
LQ-Net's least squares are included), averaged per step; plus the method's per-epoch hook
(e.g. BN recalibration) and its end-of-training hook, counted once each. Element-wise work
(softmax over candidates, rounding, optimizer updates) is not counted by FlopCounterMode.
"""
from __future__ import annotations

import copy
import dataclasses
import random
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from harness import models
from methods.base import Progress, quant_layers
from methods.base import get as get_method

TRAIN_STEPS = 4  # exact for per-step work that repeats every 1, 2 or 4 steps (sbn_every)

# (in_channels, height, width, classes) of the named datasets, for records that predate the
# recorded input shape; imagefolder is read from its root when that exists here
KNOWN_SHAPES = {"digits": (1, 8, 8, 10), "mnist": (1, 28, 28, 10),
                "fashion-mnist": (1, 28, 28, 10), "cifar10": (3, 32, 32, 10),
                "cifar100": (3, 32, 32, 100)}


def layer_macs(model: nn.Module, in_channels: int, image_size) -> dict[str, int]:
    """MACs of every module that runs a convolution or a matrix product, by module name, for
    one image (FlopCounterMode over one forward, halved)."""
    model = copy.deepcopy(model).eval().cpu()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, in_channels, *image_size))
    root = type(model).__name__
    out = {}
    for key, ops in counter.get_flop_counts().items():
        if key.startswith(root + "."):
            out[key[len(root) + 1:]] = sum(ops.values()) // 2
    return out


def _weight_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _make_method(cfg):
    cls = get_method(cfg.method)
    return cls(cls.parse_options(dict(cfg.method_options)), cfg.w_bits)


def deployed_size_bits(cfg, num_classes: int, in_channels: int, image_size) -> dict[str, int]:
    """Bits of the deployed model (module docstring), split into quantized codes and the
    rest; built with the run's method in its initial state."""
    torch.manual_seed(0)
    model = models.build(cfg, num_classes, in_channels, tuple(image_size), _make_method(cfg))
    code_bits = other = 0
    with torch.no_grad():
        for _, layer in quant_layers(model):
            e = layer.wq.export()
            if e is None:
                other += layer.wq.deployed_weight().numel() * 32
            else:
                code_bits += e["codes"].numel() * layer.wq.bits
                other += (e["levels"].numel() + e["scale"].numel()) * 32
        for key, t in model.state_dict().items():
            if ".wq." not in key and not key.endswith("num_batches_tracked"):
                other += t.numel() * 32
    return {"code_bits": code_bits, "other_bits": other}


def inference_cost(cfg, num_classes: int, in_channels: int, image_size) -> dict[str, Any]:
    """MACs, BOPs, FLOPs, OPs and size of the deployed network, per layer and in total."""
    plain = models.build(cfg, num_classes, in_channels, tuple(image_size), method=None)
    macs = layer_macs(plain, in_channels, image_size)
    quantized = set(models.policy_layers(plain, cfg.model)) if cfg.w_bits < 32 else set()
    rows = []
    for name in _weight_layers(plain):
        q = name in quantized
        w, a = (cfg.w_bits, cfg.a_bits) if q else (32, 32)
        m = macs.get(name, 0)
        rows.append({"layer": name, "macs": m, "w_bits": w, "a_bits": a,
                     "bops": m * w * a if q else 0, "flops": 0 if q else m,
                     "params": plain.get_submodule(name).weight.numel()})
    size = deployed_size_bits(cfg, num_classes, in_channels, image_size)
    bops, flops = sum(r["bops"] for r in rows), sum(r["flops"] for r in rows)
    return {"macs": sum(r["macs"] for r in rows), "bops": bops, "flops": flops,
            "ops": bops / 64 + flops, "size_bytes": (size["code_bits"] + size["other_bits"]) / 8,
            "code_bytes": size["code_bits"] / 8,
            "input_shape": [in_channels, *image_size], "num_classes": num_classes,
            "layers": rows}


def input_shape_of(cfg_dict: dict[str, Any]) -> tuple[int, tuple[int, int], int] | None:
    """(in_channels, image size, classes) of a recorded config's dataset, when known without
    its summary: the named datasets, or an image folder whose root exists here."""
    data = cfg_dict.get("data") or {}
    name = data.get("name")
    if name in KNOWN_SHAPES:
        c, h, w, k = KNOWN_SHAPES[name]
        return c, (h, w), k
    root = Path(str(data.get("root") or ""))
    if name == "imagefolder" and (root / "train").is_dir():
        try:
            from harness import data as data_mod

            classes = [d for d in (root / "train").iterdir() if d.is_dir()]
            w, h = data_mod._image_size(root)
            if max(w, h) > data_mod.SMALL_IMAGE_MAX:
                h = w = 224  # streamed folders are resized to 224 px
            return 3, (h, w), len(classes)
        except Exception:  # an unreadable folder: the shape stays unknown
            return None
    return None


# --------------------------------------------------------------------------- training

def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def count_training_flops(trainer: Any, steps: int = TRAIN_STEPS) -> dict[str, Any]:
    """FLOPs of training steps and of the method's epoch and end hooks (module docstring),
    on deep copies of ``trainer``'s model, method and optimizer (the LR schedule is left
    out), so the run itself is untouched: every random-number state is restored afterwards,
    and batches come from a generator of their own (``RunContext.train_batches``)."""
    shadow = copy.copy(trainer)
    shadow.model, shadow.method, shadow.optimizer = copy.deepcopy(
        (trainer.model, trainer.method, trainer.optimizer))
    shadow.scheduler = types.SimpleNamespace(step=lambda: None)  # the LR changes no FLOPs
    shadow.forward = shadow.model
    shadow.run = dataclasses.replace(trainer.run, log=lambda line: None)
    py, npy = random.getstate(), np.random.get_state()
    devices = [trainer.device] if trainer.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            n = min(steps, trainer.spe)
            batches = list(shadow.run.train_batches(n, seed_offset=7919))
            shadow.model.train()

            def run_steps():
                for i, (x, y) in enumerate(batches):
                    shadow.train_step(x, y, Progress(0, trainer.cfg.epochs, i, trainer.spe))

            step = _flops(run_steps) / n
            epoch_hook = _flops(lambda: shadow.method.after_epoch(shadow.model, shadow.run))
            end_hook = _flops(lambda: shadow.method.after_training(shadow.model, shadow.run))
    finally:
        random.setstate(py)
        np.random.set_state(npy)
    total = (step * trainer.spe + epoch_hook) * trainer.cfg.epochs + end_hook
    return {"flops_per_step": step, "steps_counted": n, "epoch_hook_flops": epoch_hook,
            "end_hook_flops": end_hook, "steps_per_epoch": trainer.spe,
            "total_flops": total}
