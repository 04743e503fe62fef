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
              batch-norm statistics and affine parameters, PACT clip values) at 32 bits
              (batch-norm batch counters left out). The method's export decides the shapes of
              levels and scales (a function of C_out only). ``harness.deploy.packing`` stores
              exactly this payload (plus the 8-byte batch counters); a test checks the two agree for
              every method.

Training (per run, measured once at its start by :func:`count_training_flops`): FLOPs
(torch's convention, 2 per MAC, so x2 the inference MACs) of ``TRAIN_STEPS`` real training
steps of the run's own model, method and optimizer on copies (forward, backward, the
optimizer step and every method hook, so the extra no-grad forward of SLB's State BN and
LQ-Net's least squares are included), averaged per step; plus the method's per-epoch hook
(e.g. BN recalibration) and its end-of-training hook, counted once each. Element-wise work
(softmax over candidates, rounding, optimizer updates) is not counted by FlopCounterMode.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from harness.config import options_dict
from harness.tasks import models
from harness.tasks.base import get as get_task
from harness.tasks.classify import data as classify_data
from methods.act import make_act_quantizer
from methods.base import Progress
from methods.base import get as get_method

TRAIN_STEPS = 4  # exact for per-step work that repeats every 1, 2 or 4 steps (sbn_every)

@functools.lru_cache(maxsize=64)
def _plain(task: str, mcfg, a_bits: int, num_classes: int, in_channels: int,
           image_size: tuple[int, int], task_options: Any = None) -> tuple:
    """What the counts need of the float network, by layer: (name, conv?, C_out, weight
    numel, MACs), the policy's layer names, and the numel of its other inference tensors
    (the activation function, ReLU or Hardtanh, changes none of them)."""
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        registry = get_task(task).runtime().models
        model = models.build(_Cfg(mcfg, a_bits, task_options), registry, num_classes,
                             in_channels, image_size, None).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_channels, *image_size))
    root = type(model).__name__ + "."
    macs = {k[len(root):]: sum(ops.values()) // 2
            for k, ops in counter.get_flop_counts().items() if k.startswith(root)}
    layers = tuple((n, isinstance(m, nn.Conv2d), m.weight.shape[0], m.weight.numel(),
                    macs.get(n, 0))
                   for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    weights = {f"{n}.weight" for n, *_ in layers}
    other = sum(t.numel() for k, t in model.state_dict().items()
                if k not in weights and not k.endswith("num_batches_tracked"))
    return layers, tuple(models.policy_layers(model, mcfg)), other


@dataclasses.dataclass(frozen=True)
class _Cfg:
    """The config fields models.build reads for the float network (``task_options``: the
    task's section, e.g. the SR scale and depth)."""
    model: Any
    a_bits: int
    task_options: Any = None


@functools.lru_cache(maxsize=256)
def _export_numel(method: str, options_json: str, w_bits: int, conv: bool, c_out: int) -> int:
    """Numel of the levels and scale a layer with C_out output channels exports: by the
    export format (methods.base.decode) they depend on C_out alone, so the method's quantizer
    is built on a 1x1 stand-in layer with that many output channels; -1 for a layer that
    keeps full-precision weights."""
    cls = get_method(method)
    m = cls(cls.parse_options(json.loads(options_json)), w_bits)
    stand_in = nn.Conv2d(1, c_out, 1, bias=False) if conv else nn.Linear(1, c_out, bias=False)
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(0)
        e = m.make_quantizer(stand_in, "stand-in").export()
    return -1 if e is None else e["levels"].numel() + e["scale"].numel()


def inference_cost(cfg, num_classes: int, in_channels: int, image_size) -> dict[str, Any]:
    """MACs, BOPs, FLOPs, OPs and size of the deployed network (module docstring), per
    layer and in total."""
    layers, policy, other = _plain(cfg.task, cfg.model, 32, num_classes, in_channels,
                                   tuple(image_size), cfg.task_options)
    options = json.dumps(options_dict(cfg.method_options), sort_keys=True, default=str)
    act_numel = sum(t.numel() for t in make_act_quantizer(
        cfg.a_bits, cfg.a_quant, cfg.pact_init).state_dict().values())
    rows, code_bits, other_bits = [], 0, other * 32
    for name, conv, c_out, numel, m in layers:
        extra = _export_numel(cfg.method, options, cfg.w_bits, conv, c_out) \
            if name in policy else -1
        q = extra >= 0
        w, a = (cfg.w_bits, cfg.a_bits) if q else (32, 32)
        rows.append({"layer": name, "macs": m, "w_bits": w, "a_bits": a,
                     "bops": m * w * a if q else 0, "flops": 0 if q else m, "params": numel})
        code_bits += numel * w if q else 0
        other_bits += (extra * 32 if q else numel * 32) + (act_numel * 32 if name in policy
                                                           else 0)
    bops, flops = sum(r["bops"] for r in rows), sum(r["flops"] for r in rows)
    return {"macs": sum(r["macs"] for r in rows), "bops": bops, "flops": flops,
            "ops": bops / 64 + flops, "size_bytes": (code_bits + other_bits) / 8,
            "code_bytes": code_bits / 8,
            "input_shape": [in_channels, *image_size], "num_classes": num_classes,
            "layers": rows}


def input_shape_of(cfg_dict: dict[str, Any]) -> tuple[int, tuple[int, int], int] | None:
    """(in_channels, image size, classes) of a recorded config's dataset, when known without
    its summary: the named datasets, or an image folder whose root exists here."""
    data = cfg_dict.get("data") or {}
    name = data.get("name")
    # the registry's fixed shape, for records that predate
    known = classify_data.DATASETS.get(name)
    if known is not None and known.shape:  # the recorded input shape
        c, h, w, k = known.shape
        return c, (h, w), k
    root = Path(str(data.get("root") or ""))
    if name == "imagefolder" and (root / "train").is_dir():
        try:
            classes = [d for d in (root / "train").iterdir() if d.is_dir()]
            w, h = classify_data._image_size(root)
            if max(w, h) > classify_data.SMALL_IMAGE_MAX:
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


def count_training_flops(shadow: Any, steps: int = TRAIN_STEPS) -> dict[str, Any]:
    """FLOPs of training steps and of the method's epoch and end hooks (module docstring),
    taken on ``shadow``, a trainer's ``counting_copy()`` (its own model, method and optimizer,
    no LR schedule, no logging), so the run itself is untouched: every random-number state is
    restored afterwards, and batches come from a generator of their own
    (``RunContext.train_batches``)."""
    py, npy = random.getstate(), np.random.get_state()
    devices = [shadow.device] if shadow.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            n = min(steps, shadow.steps_per_epoch)
            batches = list(shadow.run.train_batches(n, seed_offset=7919))
            shadow.model.train()

            def run_steps():
                for i, (x, y) in enumerate(batches):
                    shadow.step(x, y, Progress(0, shadow.cfg.epochs, i, shadow.steps_per_epoch))

            step = _flops(run_steps) / n
            epoch_hook = _flops(shadow.epoch_hook)
            end_hook = _flops(lambda: shadow.method.after_training(shadow.model, shadow.run))
    finally:
        random.setstate(py)
        np.random.set_state(npy)
    total = (step * shadow.steps_per_epoch + epoch_hook) * shadow.cfg.epochs + end_hook
    return {"flops_per_step": step, "steps_counted": n, "epoch_hook_flops": epoch_hook,
            "end_hook_flops": end_hook, "steps_per_epoch": shadow.steps_per_epoch,
            "total_flops": total}
