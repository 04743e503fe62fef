"""State batch normalization: a second set of BN running statistics for the discrete network.

A method whose deployed (discrete) weights differ from its training weights, like SLB (paper
eq. 6; methods/slb.py says which mode is whose and when recal_epoch starts), can keep two sets
of BN running statistics sharing gamma/beta: the continuous set, used and updated by the
training forward, and the quantized set (``*_q`` buffers), updated by forwards of the deployed
network and used to evaluate it. ``bn`` modes (:class:`StateBNMode`); every BatchNorm2d with
running statistics becomes a :class:`StateBN` except with ``none``:
    sbn          training forwards use and update the continuous set; after every
                 ``every``-th optimizer step one forward of the same batch with the deployed
                 weights (train mode, batch statistics; :meth:`DiscreteState.update`) updates
                 the quantized set; the deployed network is evaluated with the quantized set.
    recal_epoch  after an epoch (from the one the method names on) the quantized set is
                 recomputed as the plain average (momentum None, torch.optim.swa_utils.update_bn)
                 over ``recal_batches`` augmented training batches (0: as many as the test set
                 has) in the deployed state, train mode; until the first recalibration the
                 deployed network is evaluated with the continuous set.
    recal_end    the same recomputation once, after training; until then the continuous set.
    none         plain BatchNorm2d: the deployed network uses the continuous statistics.
The sbn pass (:meth:`DiscreteState.update`) runs under torch.inference_mode (no autograd graph,
nothing saved), computes each layer's deployed weight once (WeightQuantizer.deployed_weight;
for SLB one argmax pass over the logits), swaps no buffers but the StateBNs' and walks the
module tree only when the model is first seen: its cost is one forward, no backward. It runs
in the default precision (no autocast) and in the model's memory format, on the step's batch
as the training forward saw it (channels-last when the run is), through the activation
quantizers (part of the deployed network). Every BatchNorm2d gets two sets, also BNs whose
input does not depend on a quantized layer (e.g. after a full-precision first conv): their sets
then only differ by update timing. Recalibration averages batch statistics in train mode
(MindSpore's eval-mode pass that never resets its flag is avoided).

Inside :meth:`DiscreteState.entered` (a method's ``deployed``) each StateBN's running_mean/
running_var/num_batches_tracked *are* the quantized set (the buffers are swapped, so the
ordinary BatchNorm forward and every reader of the attributes, e.g. the exporter, see it);
outside, the continuous set. The state dict is always written in the canonical (unswapped)
layout.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from methods.base import QLayer, quant_layers, require, set_module

_STATS = ("running_mean", "running_var", "num_batches_tracked")
BN_MODES = ("sbn", "recal_epoch", "recal_end", "none")


class StateBN(nn.BatchNorm2d):
    """BatchNorm2d with a second set of running statistics (``*_q``) for the quantized state.

    gamma/beta are shared. ``use_quantized(True)`` swaps the two sets, so the ordinary
    BatchNorm forward and every reader of ``running_mean``/``running_var`` see the quantized
    set; the state dict is always written in the canonical (unswapped) layout.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        for name in _STATS:
            self.register_buffer(name + "_q", getattr(self, name).clone())
        self.quantized = False

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d) -> "StateBN":
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                  device=bn.running_mean.device, dtype=bn.running_mean.dtype)
        missing = new.load_state_dict(bn.state_dict(), strict=False).missing_keys
        assert sorted(missing) == sorted(n + "_q" for n in _STATS), missing
        for name in _STATS:
            getattr(new, name + "_q").copy_(getattr(new, name))
        return new.train(bn.training)

    def use_quantized(self, on: bool) -> None:
        if on != self.quantized:
            b = self._buffers
            for name in _STATS:
                b[name], b[name + "_q"] = b[name + "_q"], b[name]
            self.quantized = on

    @contextlib.contextmanager
    def _canonical(self) -> Iterator[None]:
        was = self.quantized
        self.use_quantized(False)
        try:
            yield
        finally:
            self.use_quantized(was)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        with self._canonical():
            super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, *args, **kwargs):
        with self._canonical():
            super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", quantized={self.quantized}"


def install_state_bn(model: nn.Module) -> None:
    """Replace every BatchNorm2d with running statistics by a StateBN (same gamma/beta)."""
    for name, m in list(model.named_modules()):
        if type(m) is nn.BatchNorm2d and m.track_running_stats:
            set_module(model, name, StateBN.from_bn(m))
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            require(isinstance(m, StateBN), "method.bn",
                    f"{name} is a {type(m).__name__}, which has no state-BN variant; "
                    "use --set method.bn=none")


def set_bn_state(model: nn.Module, quantized: bool) -> None:
    for m in model.modules():
        if isinstance(m, StateBN):
            m.use_quantized(quantized)


class DiscreteState:
    """The QLayers and StateBNs of one model, found once (the module tree is walked when this
    is built, not at every step), and the passes of the discrete network over them."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers: list[QLayer] = [layer for _, layer in quant_layers(model)]
        self.bns: list[StateBN] = [m for m in model.modules() if isinstance(m, StateBN)]

    @contextlib.contextmanager
    def entered(self, quantized_bn: bool) -> Iterator[None]:
        """Every QLayer on its deployed weight (computed once, here), every StateBN on its
        quantized set when ``quantized_bn`` (else on the continuous set)."""
        with torch.no_grad():
            weights = [layer.wq.deployed_weight().detach() for layer in self.layers]
        for layer, w in zip(self.layers, weights):
            layer._deployed_weight, layer.deployed = w, True
        for bn in self.bns:
            bn.use_quantized(quantized_bn)
        try:
            yield
        finally:
            for bn in self.bns:
                bn.use_quantized(False)
            for layer in self.layers:
                layer._deployed_weight, layer.deployed = None, False

    def update(self, x: torch.Tensor) -> None:
        """The State BN pass: one forward of the deployed network on ``x`` in train mode, which
        updates the quantized statistics only (the output is dropped)."""
        with torch.inference_mode(), self.entered(quantized_bn=True):
            self.model(x)

    def recalibrate(self, batches: Iterable[Any]) -> None:
        """The quantized statistics recomputed as the plain average over ``batches``
        (momentum None, torch.optim.swa_utils.update_bn), deployed weights, train mode."""
        with torch.no_grad(), self.entered(quantized_bn=True):
            torch.optim.swa_utils.update_bn(batches, self.model)


class StateBNMode:
    """What a ``bn`` mode (module docstring) does at each hook of a method, and ``calibrated``
    (the quantized set holds a recalibration), the one thing a resume needs beyond the model."""

    def __init__(self, mode: str, every: int = 1, recal_batches: int = 0):
        self.mode, self.every, self.recal_batches = mode, every, recal_batches
        self.calibrated = False
        self._state: DiscreteState | None = None

    def prepare(self, model: nn.Module) -> None:
        if self.mode != "none":
            install_state_bn(model)
        self._state = None

    def discrete(self, model: nn.Module) -> DiscreteState:
        """The model's QLayers and StateBNs, found once per model."""
        if self._state is None or self._state.model is not model:
            self._state = DiscreteState(model)
        return self._state

    def after_step(self, model: nn.Module, x: torch.Tensor, step: int) -> None:
        """sbn: the quantized-statistics pass after every ``every``-th step (0-based ``step``)."""
        if self.mode == "sbn" and (step + 1) % self.every == 0:
            self.discrete(model).update(x)

    def recalibrate(self, model: nn.Module, run: Any) -> None:
        n = self.recal_batches or max(1, math.ceil(run.data.num_test / run.cfg.batch_size))
        self.discrete(model).recalibrate(run.train_batches(n))
        self.calibrated = True

    def after_epoch(self, model: nn.Module, run: Any, due: bool) -> None:
        """recal_epoch: recalibrate when the method says this epoch is ``due``."""
        if self.mode == "recal_epoch" and due:
            self.recalibrate(model, run)

    def after_training(self, model: nn.Module, run: Any) -> None:
        if self.mode == "recal_end":
            self.recalibrate(model, run)

    def changed_after_training(self) -> str:
        return ("BN statistics recalibrated on the deployed weights (bn = recal_end)"
                if self.mode == "recal_end" else "")

    def deployed(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        """The discrete network, with the quantized statistics where they hold any."""
        return self.discrete(model).entered(quantized_bn=self.mode == "sbn" or self.calibrated)
