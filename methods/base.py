"""The method interface, the registry and the quantized layer every method plugs into.

A *method* decides how the weights of the quantized layers are parametrized, trained and
deployed. The trainer (harness/run/trainer.py) only calls the hooks below, in this order, and never
asks which method it holds:

    method = get("slb")(options, w_bits)
    for each layer chosen by the quantization policy:
        QLayer(layer, method.make_quantizer(layer, name), activation_quantizer)
    method.prepare(model, run)                         # once, before the optimizer is built
    groups = method.param_groups(model, default_groups)
    per epoch:
        method.on_epoch_start(model, progress)
        per step:
            method.before_step(model, progress)
            loss = task loss + method.loss(model); loss.backward(); optimizer.step()
            method.after_step(model, x, y, progress)   # gradients are still in .grad here
        method.after_epoch(model, run)
        with method.deployed(model): evaluate        # the discrete, deployable network
        method.scalars(model, run) -> metrics.csv columns
    method.after_training(model, run)                  # before the final evaluation
    state_dict()/load_state_dict()                     # what a resume needs beyond the model

``run`` is the trainer's RunContext (harness/run/trainer.py): the config (``run.cfg``), the
data (``run.data``), ``run.evaluate(model)`` (test loss and the task's headline score),
``run.score`` (that metric; ``.column`` names a column about it), ``run.train_batches(n)``
and ``run.log``. The trainer
passes it positionally. Every hook has a do-nothing default, so a simple method overrides two
or three of them.

Shared quantizer primitives (sign with sign(0) = +1, per-channel reshapes, straight-through
sign and round) live in ``methods._ops``; option checks use ``harness.errors.require``.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import types
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import UserError, did_you_mean, require  # noqa: F401  (re-exported)
from methods._ops import per_channel, sign
from methods.options import NoOptions, parse_options  # noqa: F401  (re-exported)

# --------------------------------------------------------------------------- registry

REGISTRY: dict[str, type["Method"]] = {}
_NOT_METHODS = {"base", "act", "errors", "options"}


def register(cls: type["Method"]) -> type["Method"]:
    """Class decorator: make a method available under ``cls.name``."""
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise RuntimeError(f"method name {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


_SCANNED: dict[str, int] = {}   # folder -> its mtime when its modules were last imported


def load_all() -> dict[str, type["Method"]]:
    """Import every module of the methods package so each registers itself (not the shared
    modules in ``_NOT_METHODS``, nor private ones such as ``_ops``); the folder is scanned
    again only when a file was added or removed since (its mtime)."""
    import methods

    for folder in methods.__path__:
        mtime = os.stat(folder).st_mtime_ns
        if _SCANNED.get(folder) == mtime:
            continue
        for info in pkgutil.iter_modules([folder]):
            if info.name not in _NOT_METHODS and not info.name.startswith("_"):
                importlib.import_module(f"methods.{info.name}")
        _SCANNED[folder] = mtime
    return REGISTRY


def get(name: str) -> type["Method"]:
    if name not in load_all():
        raise UserError("method", f"unknown method {name!r}{did_you_mean(name, REGISTRY)}")
    return REGISTRY[name]


# --------------------------------------------------------------------------- quantizers

def decode(codes: torch.Tensor, levels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Weights from an export: ``levels[codes] * scale``.

    levels: [L] (one level set per layer) or [C_out, L] (one per output channel, LQ-Net).
    scale: a 0-d tensor or [C_out] (per output channel). The deployed forward of every
    method and the model rebuilt from deployed.pt both go through this function, so the two
    agree bit for bit.
    """
    idx = codes.long()
    if levels.dim() == 1:
        w = levels[idx]
    else:
        flat = idx.reshape(idx.shape[0], -1)
        w = torch.gather(levels, 1, flat).reshape(idx.shape)
    return w * per_channel(scale, w)


def binary_export(w: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """The export of sign weights: codes 0/1 for -1/+1 (methods._ops.sign, sign(0) = +1),
    levels [-1, 1]."""
    return {"codes": (sign(w) > 0).to(torch.uint8),
            "levels": torch.tensor([-1.0, 1.0], dtype=w.dtype, device=w.device),
            "scale": scale}


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name``."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def code_dtype(n_levels: int) -> torch.dtype:
    return torch.uint8 if n_levels <= 256 else torch.int32


class WeightQuantizer(nn.Module):
    """Owns one layer's weight parametrization (a method's per-layer state).

    ``forward()`` returns the weight used in training forwards; ``export()`` returns the
    discrete deployed form as codes/levels/scale (or None for a full-precision layer).
    Class attributes tell the trainer how to treat the module's parameters:
    ``latent``: names of parameters that stand for the layer's weights (weight decay as for
    weights); every other parameter is a quantizer parameter (scale, clip, step size).
    ``self_updated``: parameters the method updates itself (never given to the optimizer).
    ``state_buffers``: buffers that are optimizer-like state (reported as such).
    """

    latent: ClassVar[tuple[str, ...]] = ("weight",)
    self_updated: ClassVar[tuple[str, ...]] = ()
    # buffers that play the role of optimizer state (e.g. Bop's gradient average), counted
    # with the optimizer state in the run summary's cost figures
    state_buffers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, weight: torch.Tensor, bits: int):
        super().__init__()
        self.shape = tuple(weight.shape)
        self.bits = bits

    def forward(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def export(self) -> dict[str, torch.Tensor] | None:
        """{"codes": int tensor of weight.shape, "levels": [L] or [C_out, L], "scale": 0-d or
        [C_out]}; None when the layer keeps full-precision weights."""
        return None

    def deployed_weight(self) -> torch.Tensor:
        e = self.export()
        if e is None:
            return self.forward().detach()
        return decode(e["codes"], e["levels"], e["scale"])


class QLayer(nn.Module):
    """A conv or linear layer whose input goes through the recipe's activation quantizer and
    whose weight comes from a method's WeightQuantizer (``wq``).

    In the deployed state (``deployed=True``) the weight is the cached discrete weight,
    computed once when the state is entered (see :func:`set_deployed`).
    """

    def __init__(self, layer: nn.Module, wq: WeightQuantizer, act: nn.Module):
        super().__init__()
        if isinstance(layer, nn.Conv2d):
            self.kind = "conv"
            self.conv_args = dict(stride=layer.stride, padding=layer.padding,
                                  dilation=layer.dilation, groups=layer.groups)
        elif isinstance(layer, nn.Linear):
            self.kind = "linear"
            self.conv_args = {}
        else:
            raise TypeError(f"cannot quantize {type(layer).__name__}")
        self.in_features = layer.weight.shape[1]
        self.out_features = layer.weight.shape[0]
        self.act = act
        self.wq = wq
        self.bias = layer.bias
        self.deployed = False
        self._deployed_weight: torch.Tensor | None = None

    @property
    def weight(self) -> torch.Tensor:
        if self.deployed:
            return self._deployed_weight
        return self.wq()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        w = self.weight
        if self.kind == "conv":
            return F.conv2d(x, w, self.bias, **self.conv_args)
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        return f"{self.kind}, {self.in_features}->{self.out_features}, deployed={self.deployed}"


def quant_layers(model: nn.Module) -> Iterator[tuple[str, QLayer]]:
    for name, m in model.named_modules():
        if isinstance(m, QLayer):
            yield name, m


def init_from_state(method: "Method", model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Method.init_from_fp: copy what ``state`` holds under the same name and shape, then give
    every quantized layer the quantizer ``method.fp_quantizer`` builds from its fp weight
    (``NAME.wq.weight``, or ``NAME.weight``)."""
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape == value.shape and ".wq." not in key:
            own[key].copy_(value.to(own[key]))
    for name, layer in list(quant_layers(model)):
        w = state.get(f"{name}.wq.weight", state.get(f"{name}.weight"))
        old = layer.wq.shape
        require(w is not None and tuple(w.shape) == tuple(old), "init.source",
                f"the source has no weight of shape {tuple(old)} for layer {name!r} ("
                f"{'none' if w is None else tuple(w.shape)}); start from a full-precision run "
                "of the same model and width")
        device = next(layer.parameters()).device
        stand_in = types.SimpleNamespace(weight=w.detach().to(device, torch.float32))
        layer.wq = method.fp_quantizer(stand_in, name).to(device)


@torch.no_grad()
def set_deployed(model: nn.Module, on: bool) -> None:
    for _, layer in quant_layers(model):
        layer._deployed_weight = layer.wq.deployed_weight().detach() if on else None
        layer.deployed = on


# --------------------------------------------------------------------------- the method

@dataclass
class Progress:
    """Where training stands; ``step`` counts optimizer steps from 0 over the whole run."""

    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def fraction(self) -> float:
        """Fraction of training done at this step (0 at the first step)."""
        return self.step / max(1, self.total_steps)


class Method:
    """Base class: override what the method needs; every hook defaults to doing nothing."""

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""  # how reports name it ("DoReFa-Net"); "" = ``name``
    # metrics.csv columns the method adds that reports draw as companion panels:
    # column -> (title, (lower bound, upper bound) or None); the trainer records this. A
    # column about the task's headline score says "{score}" in its name, "{score_short}" and
    # "{score_unit}" in its title and "score" for its bounds (Method.info fills them in)
    internal_metrics: ClassVar[dict[str, tuple[str, tuple[float | None, float | None] | None]]] = {}
    # of those, the ones reports draw on a log axis (when they span a wide range)
    log_scale_metrics: ClassVar[tuple[str, ...]] = ()
    bits: ClassVar[frozenset[int]] = frozenset()
    default_bits: ClassVar[int] = 1
    Options: ClassVar[type] = NoOptions
    # option sets `python -m harness bench` times separately, by label ("" = defaults)
    bench_variants: ClassVar[dict[str, dict[str, Any]]] = {"": {}}

    def __init__(self, options: Any, w_bits: int):
        self.opt = options
        self.w_bits = w_bits

    @classmethod
    def info(cls, score: Any = None) -> dict[str, Any]:
        """What a run records about its method for reports (summary.json ``method_info``);
        ``score``: the task's headline metric (harness/tasks/base.py Metric), for columns
        declared about it; default: classification's test accuracy."""
        column, short, unit, bounds = ("test_acc", "test acc", "%", (0.0, 100.0)) \
            if score is None else (score.column, score.short, score.unit, score.bounds)
        metrics = {}
        for k, (title, b) in cls.internal_metrics.items():
            b = bounds if b == "score" else b
            metrics[k.format(score=column)] = [
                title.format(score_short=short, score_unit=unit), list(b) if b else None]
        return {"display_name": cls.display_name or cls.name, "internal_metrics": metrics,
                "log_scale": list(cls.log_scale_metrics)}

    # --- construction
    @classmethod
    def parse_options(cls, raw: dict[str, Any]) -> Any:
        """Validate ``method.<option>`` values; extend for checks across options."""
        return parse_options(cls.Options, raw, "method")

    @classmethod
    def check_options(cls, options: Any, w_bits: int, a_bits: int) -> None:
        """Checks that need the parsed options and the bit widths (default: none)."""

    @classmethod
    def inert_options(cls, options: Any) -> set[str]:
        """Names of the parsed options that change nothing this run computes: at the value that
        reproduces what the code did before the option existed, or ignored by the other
        options. The config hash (the run id) leaves them out, so adding an option keeps the
        ids of earlier runs (default: none)."""
        return set()

    @classmethod
    def recipe_changes(cls, options: Any) -> list[str]:
        """What these options change of the shared recipe (e.g. a method's own activation
        quantizer); a study accepts such a variant only when it is marked unmatched."""
        return []

    @classmethod
    def check_bits(cls, w_bits: int) -> None:
        require(w_bits in cls.bits, "w_bits", f"method {cls.name!r} supports weight bits "
                f"{sorted(cls.bits)}, not {w_bits}; pass --w-bits with one of them")

    def make_quantizer(self, layer: nn.Module, name: str) -> WeightQuantizer:
        raise NotImplementedError

    # --- starting from a full-precision network (init.source: pretraining as a study stage)
    def fp_quantizer(self, layer: Any, name: str) -> WeightQuantizer:
        """The quantizer of a layer whose ``weight`` is a trained full-precision weight. The
        default is make_quantizer, which derives the method's state from the weight it is
        given (STE, DoReFa, fp copy it; LSQ sets its step size from it, Bop its signs and
        scales, hashing its scales); a method whose own init ignores the weight (SLB's random
        logits, LQ-Net's fixed bases) overrides this."""
        return self.make_quantizer(layer, name)

    @torch.no_grad()
    def init_from_fp(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Start from a full-precision network (``state``: the state dict of an fp run of the
        same model): every parameter and buffer of the same name and shape is copied (batch
        norms, full-precision layers, biases) and each quantized layer's quantizer is rebuilt
        by :meth:`fp_quantizer` from its fp weight. Called before :meth:`prepare`."""
        init_from_state(self, model, state)

    @torch.no_grad()
    def calibrate_from_fp(self, model: nn.Module, run: Any) -> None:
        """After init_from_fp (and prepare): the batch-norm statistics re-estimated for the
        deployed network (an average over as many augmented training batches as the test set
        has, torch.optim.swa_utils.update_bn): the fp network's statistics describe its own
        float weights, not the quantized ones. Nothing for a full-precision method."""
        if self.w_bits >= 32:
            return
        n = max(1, -(-run.data.num_test // run.cfg.batch_size))
        with self.deployed(model):
            torch.optim.swa_utils.update_bn(run.train_batches(n, seed_offset=7), model)

    def prepare(self, model: nn.Module, run: Any) -> None:
        """Called once after the quantized layers are installed (e.g. swap BN modules)."""

    def param_groups(self, model: nn.Module, groups: list[dict]) -> list[dict]:
        """Adjust the recipe optimizer's parameter groups (default: unchanged)."""
        return groups

    # --- training hooks
    def loss(self, model: nn.Module) -> torch.Tensor | None:
        """An extra loss term added to the task loss (default: none)."""
        return None

    def on_epoch_start(self, model: nn.Module, progress: Progress) -> None:
        pass

    def before_step(self, model: nn.Module, progress: Progress) -> None:
        pass

    def after_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   progress: Progress) -> None:
        pass

    def after_epoch(self, model: nn.Module, run: Any) -> None:
        pass

    def after_training(self, model: nn.Module, run: Any) -> None:
        pass

    def changed_after_training(self) -> str:
        """What ``after_training`` changes in the deployed network, in a few words ("" when
        nothing: the final score is then the last epoch's, which the record validator checks).
        A method that overrides ``after_training`` and changes the network says so here."""
        return ""

    # --- deployment and reporting
    @contextlib.contextmanager
    def deployed(self, model: nn.Module) -> Iterator[None]:
        """The discrete network: every QLayer uses its deployed weight."""
        set_deployed(model, True)
        try:
            yield
        finally:
            set_deployed(model, False)

    def scalars(self, model: nn.Module, run: Any) -> dict[str, float]:
        """Extra per-epoch metrics (become metrics.csv columns, same set every epoch)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
