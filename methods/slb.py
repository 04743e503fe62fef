"""slb: Searching for Low-Bit weights, every weight a learned distribution over a candidate set.

Paper: Yang, Wang, Han, Xu, Xu, Tao, Xu, "Searching for Low-Bit Weights in Quantized Neural
Networks", NeurIPS 2020, arXiv 2009.08695. Official code: huawei-noah/Binary-Neural-Networks
SLB/ (README recipe); re-implementation: MindSpore. Facts and their sources:
../shared/notes/methods.md and ../shared/reference/recipes.md. The paper's equation numbers
could not be checked against the PDF offline, so the equations are numbered (1)-(7) here and
the code cites these numbers.

Candidates (1): V = (v_1 < ... < v_n), default linspace(-1, 1, 2^b) ({-1, +1} at 1 bit;
    -1, -1/3, 1/3, 1 at 2 bits; no zero), or any sorted list ``method.candidates``. No scale.
Logits: A, one per candidate per weight, shape weight.shape + (n,) (the last axis is V;
    stored candidates-first as (n, weight.numel()), see :class:`SlbWeight`).
Forward, training (2), no STE anywhere:
    P = softmax(T * A) over the last axis,  W_c = sum_i P_i v_i = P @ V      (:func:`slb_weight`)
  with T the inverse temperature (the paper divides by tau and lowers tau; the official code
  multiplies by T = 1/tau and raises T; same function).
Backward (3): the exact gradient of (2), by autograd:
    dL/dA_i = T * P_i * (v_i - W_c) * dL/dW_c
Forward, deployed (4): W_q = v_{argmax_i A_i} (ties: the first index)    (:func:`slb_deploy`)
  Export: codes = argmax_i A_i, levels = V, scale = 1; the deployed weight is
  ``decode(codes, V, 1)`` (the base class), equal to (4) bit for bit.
Temperature (5), T from t0 to t1 over [start, end] of training, position p in epochs
  (``granularity=epoch``: p = e, the 0-based epoch; s = floor(start E), e_end = floor(end E), as
  the official code) or in steps (``granularity=step``: p = step, s = start N, e_end = end N):
    r = clamp((p - s) / (e_end - s), 0, 1)
    exp     T = t0 (t1/t0)^r
    linear  T = t0 + (t1 - t0) r
    cos     T = t0 + (t1 - t0) (1 - cos(pi r)) / 2
    sgdr    [s, e_end] split into cycles of length c_k = sgdr_cycle (e_end - s) sgdr_mult^k; a
            cycle is added only while the next one still fits, the last cycle absorbs the rest,
            so it ends at e_end with T = t1. Within a cycle T = t0 (t1/t0)^r_k (r_k the position in
            the cycle): T climbs to t1 and restarts at t0.
  exp with ``factor`` f is the official per-epoch form, with golden-stick's epoch semantics
  (mindspore_gs/quantization/slb/slb_quant_aware_training.py, TemperatureScheduler.epoch_begin;
  MindSpore numbers epochs from 1 when it calls epoch_begin):
    n = k + 1 (k the 0-based epoch), s = int(E start), e_end = int(E end) (Python int() of
    the float products, exactly as golden-stick), T_k = t0 f^(min(n, e_end) - s) if n > s else t0
  e.g. E = 10, f = 2, start 0.2, end 0.8, t0 = 1: T = 1, 1, 2, 4, 8, 16, 32, 64, 64, 64 (t1
  is then not used). At step granularity f also counts per epoch, continuously:
  T = t0 f^((clamp(step, s, e_end) - s) / steps_per_epoch) with s = start N, e_end = end N.
  All schedules span comparable ranges. T is set per epoch (before its first step) or per step
  (before each step); metrics.csv row k logs the T used for training during epoch k
  (inv_temperature; the last one at step granularity) and 1/T (temperature).
``hard_end`` (golden-stick's ``set_temperature_end_flag``): once the window has ended (factor
  form: n >= e_end, the epoch that first uses the final T; otherwise p >= e_end) the training
  forward uses the one-hot argmax weights W_q (eq. 4) instead of W_c. A then gets a zero
  gradient (argmax has none, as MindSpore's), so weight decay and the momentum of earlier steps
  still act on it, as they do in golden-stick; quant_gap is then 0.
State batch normalization (6), ``method.bn``, lives in methods/_statebn.py (modes, mechanics,
  :class:`StateBN`): ``sbn`` the paper (a no-grad forward with W_q after every ``sbn_every``-th
  step updates a second, quantized set of BN statistics), ``recal_epoch`` the official README,
  ``recal_end`` a reviewer's, ``none``. recal_epoch starts as golden-stick's BNCalibrationCallback
  (after 1-based epoch n > int(E start)): with the first epoch whose T differs from t0
  (``recal_from=window``; the window start when T never changes); ``recal_from=first``: epoch 1.
Logit init: ``random`` A ~ N(0, init_std^2) (MindSpore: He-normal over the 5-D logits, std
  about 0.04-0.08 for these layers); ``from_fp`` (ours) A_i = -(alpha w - v_i)^2 / d^2 with w the
  layer's full-precision weight (``init_from``: a checkpoint or state dict; empty: the layer's
  own fresh init), alpha = mean|V| / mean|w| and d the smallest gap of V, so the nearest
  candidate of the rescaled weight gets the largest logit.
Per-epoch metrics (7): quant_gap = mean over layers of ||W_c - W_q|| / ||W_q||; flip_ratio =
  fraction of all quantized weights whose argmax changed during the epoch; entropy = mean over
  layers of the mean softmax entropy of P (nats); test_acc_continuous = test accuracy with W_c
  and the continuous statistics; inv_temperature, temperature.
Cost: A holds n = |V| floats per weight (n times the weight memory, 16x at 4 bits), the
  optimizer's momentum as much again (summary.json: method_param_bytes,
  method_optimizer_state_bytes); nothing of size (..., n) is kept from forward to backward: the
  backward recomputes P from A (one extra softmax per step), T*A and P are temporaries.
  bn=sbn adds one no-grad forward (and one argmax pass over A) every sbn_every steps; recal_*
  add recal_batches forwards per recalibration. Default bn=sbn (the paper), not recal_epoch.

Deviations from the paper, plainly:
- Defaults are for short CPU runs, not the paper's 500 epochs: t1 = 1e5 (the official exp
  schedule reaches ~1.6e3-7e3 after 500 epochs; over a handful of epochs T must climb much higher
  before W_c is close enough to W_q), start 0.3 and end 0.9 (official: 0.3 VGG, 0.4 ResNet, 0.9),
  epoch granularity (official; the paper updates per step). ``factor`` gives the official form.
- linear, cos and sgdr: the paper's linear and cos formulas were not available, and sgdr is a
  reviewer's suggestion; the forms above are ours, all on T over the same range.
- The paper's logit initialisation could not be verified; both inits here are documented
  choices. The logits take the recipe's weight decay (the weight group), like latent weights.
- State BN's choices (two sets in every BN, no autocast, train-mode recalibration): _statebn.
- MindSpore's switch to one-hot argmax weights after e_end is off by default (``hard_end``
  turns it on; quant_gap shows how close W_c is to W_q otherwise).
- The window's epochs s and e_end are floor(E x + 1e-9) for the ramp schedules (the guard
  keeps 0.29 x 100 at 29) but golden-stick's int(E x) for the factor form (28 there), so that
  form matches golden-stick epoch for epoch.
- A candidate list may have fewer than 2^b values with ``allow_any_count=true`` (e.g. ternary
  at 2 bits); more than 2^b values are refused (they do not fit in b bits).
Pretrained start (``init.source``): from_fp logits of the fp weights, BN re-estimated for
W_q: >= 4 bits within 2 points of the fp accuracy at step 0 (tested); 1-2 bits cannot.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from methods._fpstate import load_fp_state
from methods._statebn import BN_MODES, StateBN, StateBNMode  # noqa: F401 (StateBN re-exported)
from methods.base import (
    Method,
    Progress,
    WeightQuantizer,
    code_dtype,
    parse_options,
    quant_layers,
    register,
    require,
)
from methods.options import option

INITS = ("random", "from_fp")
SCHEDULES = ("exp", "linear", "cos", "sgdr")
GRANULARITIES = ("epoch", "step")
RECAL_FROM = ("window", "first")


# --------------------------------------------------------------------------- pure functions

class _SlbWeight(torch.autograd.Function):
    """W_c = softmax(T A) . V along axis ``dim`` (0 or -1) with the exact gradient of eq. 3,
    recomputing P in backward.

    Saving P for backward would keep an (..., n) tensor per layer alive from the forward to the
    backward pass (n times the weight memory: 16x at 4 bits). We keep only A, which is the
    parameter itself (no copy), and recompute P = softmax(T A) when its gradient is needed:
    one extra softmax over A per step, a few milliseconds, for the memory of one copy of A.
    """

    @staticmethod
    def forward(ctx, logits, candidates, inv_temperature, dim):
        p = torch.softmax(logits * inv_temperature, dim=dim)
        w = candidates @ p if dim == 0 else p @ candidates
        ctx.dim = dim
        ctx.save_for_backward(logits, candidates, inv_temperature, w)
        return w

    @staticmethod
    def backward(ctx, g):
        logits, candidates, t, w = ctx.saved_tensors
        p = torch.softmax(logits * t, dim=ctx.dim)
        # dL/dA_i = T P_i (v_i - W_c) dL/dW_c   (eq. 3), in place on the recomputed P
        if ctx.dim == 0:
            p.mul_(candidates.unsqueeze(1) - w).mul_(g * t)
        else:
            p.mul_(candidates - w.unsqueeze(-1)).mul_((g * t).unsqueeze(-1))
        return p, None, None, None


def slb_weight(logits: torch.Tensor, candidates: torch.Tensor,
               inv_temperature: float | torch.Tensor) -> torch.Tensor:
    """W_c = softmax(T A) @ V over the last axis of ``logits`` (eq. 2); gradient eq. 3. For
    backward only A itself (no copy), V, T and W_c are kept; P is recomputed."""
    t = torch.as_tensor(inv_temperature, dtype=logits.dtype, device=logits.device)
    return _SlbWeight.apply(logits, candidates.to(logits.dtype), t, -1)


def slb_weight_candidates_first(logits: torch.Tensor, candidates: torch.Tensor,
                                inv_temperature: torch.Tensor) -> torch.Tensor:
    """:func:`slb_weight` for logits stored candidates-first, shape (n, N): the same numbers,
    but the softmax runs over n contiguous rows of N values instead of N rows of n values,
    which is ~20x faster on the CPU for n = 2 or 4 (torch's softmax over a tiny last axis
    does not vectorise)."""
    return _SlbWeight.apply(logits, candidates.to(logits.dtype), inv_temperature, 0)


def argmax_rows(logits: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
    """argmax over dim 0 of candidates-first logits (n, N), the first index on ties (as
    torch.argmax); with ``values``, values[argmax] (eq. 4's W_q, flattened). torch's argmax over
    a short leading axis is strided and ~15-30x slower on the CPU; here n = 2 is one comparison,
    n <= 32 a max over the rows, one comparison with it and a max over the ranks n - i of the
    rows that reach it (the first index has the largest), a few whole-tensor ops per layer. A
    NaN logit (a diverging run) gives index n - 1 (n <= 32)."""
    n = logits.shape[0]
    fill = values if values is not None else torch.arange(n, device=logits.device)
    if n > 32:
        return fill[logits.t().contiguous().argmax(dim=1)]
    if n == 2:
        return torch.where(logits[0] >= logits[1], fill[0], fill[1])
    rank = torch.arange(n, 0, -1, dtype=torch.uint8, device=logits.device).unsqueeze(1)
    first = ((logits == logits.amax(dim=0)) * rank).amax(dim=0)  # n - index; 0 only for NaN
    return torch.cat([fill[-1:], fill.flip(0)])[first.long()]   # [n - i] -> fill[i]


class _HardSlbWeight(torch.autograd.Function):
    """golden-stick's training forward after the window (``hard_end``): W_q = V[argmax A] for
    candidates-first logits (n, N), and a zero gradient for A (argmax has none), so the
    optimizer's weight decay and momentum still act on A as in MindSpore."""

    @staticmethod
    def forward(ctx, logits, candidates):
        ctx.logits_shape = logits.shape
        return argmax_rows(logits, candidates.to(logits.dtype))

    @staticmethod
    def backward(ctx, g):
        return g.new_zeros(ctx.logits_shape), None


def slb_deploy(logits: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """W_q = V[argmax A] (eq. 4)."""
    return candidates.to(logits.dtype)[logits.argmax(dim=-1)]


def softmax_entropy(logits: torch.Tensor, inv_temperature: float | torch.Tensor,
                    dim: int = -1) -> torch.Tensor:
    """Entropy (nats) of softmax(T A) over the candidate axis, one value per weight."""
    return torch.special.entr(torch.softmax(logits * inv_temperature, dim=dim)).sum(dim)


def default_candidates(bits: int) -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, 2 ** bits)


def fp_logits(weight: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``from_fp`` init: A_i = -(alpha w - v_i)^2 / d^2, alpha = mean|V| / mean|w|, d = min gap."""
    v = candidates.to(weight.dtype)
    alpha = v.abs().mean() / weight.abs().mean().clamp_min(torch.finfo(weight.dtype).tiny)
    d = (v[1:] - v[:-1]).min()
    return -((weight * alpha).unsqueeze(-1) - v).square() / d.square()


def _ramp(p: float, s: float, e: float) -> float:
    if p >= e:
        return 1.0
    if p <= s:
        return 0.0
    return (p - s) / (e - s)


def _sgdr_cycle(p: float, s: float, e: float, first: float, mult: float) -> tuple[float, float]:
    """(start, end) of the sgdr cycle holding position p inside [s, e] (see eq. 5)."""
    span = e - s
    eps = 1e-9 * max(1.0, span)
    b, c = s, first * span
    while b + c + c * mult <= e + eps and p >= b + c:
        b, c = b + c, c * mult
    if b + c + c * mult > e + eps:  # the last cycle absorbs what is left
        c = e - b
    return b, b + c


def schedule_position(opt: "SlbOptions", progress: Progress) -> tuple[float, float, float, float]:
    """(p, s, e_end, units per epoch) of eq. 5 in epochs or steps. The factor form at epoch
    granularity counts as golden-stick: p = epoch + 1, s = int(E start), e_end = int(E end)."""
    if opt.granularity == "epoch":
        n = progress.epochs
        if opt.factor is not None:
            return (float(progress.epoch + 1), float(int(n * opt.start)),
                    float(int(n * opt.end)), 1.0)
        return (float(progress.epoch), float(math.floor(opt.start * n + 1e-9)),
                float(math.floor(opt.end * n + 1e-9)), 1.0)
    n = progress.total_steps
    return float(progress.step), opt.start * n, opt.end * n, float(progress.steps_per_epoch)


def window_ended(opt: "SlbOptions", progress: Progress) -> bool:
    """True once T has its final value (golden-stick's temperature end flag): p >= e_end."""
    p, _, e, _ = schedule_position(opt, progress)
    return p >= e


def first_recal_epoch(opt: "SlbOptions", epochs: int, steps_per_epoch: int) -> int:
    """The 0-based epoch after which ``bn=recal_epoch`` first recalibrates: 0 with
    ``recal_from=first``; else the first epoch whose T (at its last step) differs from t0, as
    golden-stick's BN calibration (after 1-based epoch n > int(E start)); the window start
    when T never changes (factor 1, t1 = t0)."""
    if opt.recal_from == "first":
        return 0
    for k in range(epochs):
        last_step = (k + 1) * steps_per_epoch - 1
        if inv_temperature(opt, Progress(k, epochs, last_step, steps_per_epoch)) != opt.t0:
            return k
    _, s, _, per_epoch = schedule_position(opt, Progress(0, epochs, 0, steps_per_epoch))
    return int(s // per_epoch)


def inv_temperature(opt: "SlbOptions", progress: Progress) -> float:
    """The inverse temperature T of eq. 5 at ``progress``."""
    p, s, e, per_epoch = schedule_position(opt, progress)
    t0, t1 = opt.t0, opt.t1
    if opt.schedule == "exp" and opt.factor is not None:
        return t0 * opt.factor ** ((min(max(p, s), e) - s) / per_epoch)
    if opt.schedule == "sgdr" and s < p < e:
        s, e = _sgdr_cycle(p, s, e, opt.sgdr_cycle, opt.sgdr_mult)
    r = _ramp(p, s, e)
    if opt.schedule in ("exp", "sgdr"):
        return t0 * (t1 / t0) ** r
    if opt.schedule == "linear":
        return t0 + (t1 - t0) * r
    return t0 + (t1 - t0) * (1.0 - math.cos(math.pi * r)) / 2.0


# --------------------------------------------------------------------------- options

@dataclass(frozen=True)
class SlbOptions:
    candidates: tuple[float, ...] = option((), "V, sorted; empty = linspace(-1, 1, 2^b)")
    allow_any_count: bool = option(False, "accept fewer than 2^b candidates")
    init: str = option("random", "initial logits: random (normal, init_std) or from_fp "
                       "(from a full-precision checkpoint)", choices=INITS)
    init_std: float = option(0.05, "std of the random logits")
    init_from: str = option("", "from_fp: checkpoint or state-dict file; empty = the layer's "
                            "own init", path=True)
    schedule: str = option(
        "exp", "inverse-temperature ramp from t0 to t1 (sgdr = warm restarts)", choices=SCHEDULES)
    t0: float = option(1.0, "inverse temperature at `start`")
    t1: float = option(1e5, "inverse temperature reached at `end`")
    start: float = option(0.3, "fraction of training where T starts to climb")
    end: float = option(0.9, "fraction of training where T reaches t1")
    factor: float | None = option(None, "exp only: official per-epoch factor (t1 then unused)")
    sgdr_cycle: float = option(0.25, "sgdr: first cycle, fraction of [start, end]")
    sgdr_mult: float = option(1.0, "sgdr: cycle length multiplier")
    granularity: str = option(
        "epoch", "temperature updated once per epoch or at every step", choices=GRANULARITIES)
    bn: str = option(
        "sbn", "State BN, BN recalibration every epoch or at the end, or plain BN",
        choices=BN_MODES)
    sbn_every: int = option(1, "sbn: quantized-statistics pass every k steps")
    recal_batches: int = option(0, "recal_*: training batches; 0 = as many as the test set")
    recal_from: str = option(
        "window", "recal_epoch: calibrate from when T starts changing, or from the first epoch",
        choices=RECAL_FROM)
    hard_end: bool = option(False, "train with W_q once the window has ended (MindSpore)")


def validate_options(o: SlbOptions) -> None:
    """Checks across options (types and choices are checked by parse_options)."""
    c = o.candidates
    if c:
        require(len(c) >= 2, "method.candidates", f"give at least 2 values, got {list(c)}")
        require(all(math.isfinite(v) for v in c), "method.candidates",
                f"values must be finite: {list(c)}")
        require(all(a < b for a, b in zip(c, c[1:])), "method.candidates",
                f"values must be sorted and distinct, e.g. {sorted(set(c))}")
    require(o.init_std > 0, "method.init_std", f"must be > 0, got {o.init_std}")
    if o.init_from:
        require(o.init == "from_fp", "method.init_from",
                "is only read with method.init=from_fp; add --set method.init=from_fp or drop it")
        require(Path(o.init_from).is_file(), "method.init_from",
                f"file {o.init_from!r} not found; pass a checkpoint.pt or state-dict file")
    require(o.t0 > 0 and math.isfinite(o.t0), "method.t0",
            f"must be a positive number, got {o.t0}")
    require(o.t1 >= o.t0 and math.isfinite(o.t1), "method.t1",
            f"must be finite and >= method.t0 ({o.t0}), got {o.t1}")
    require(0.0 <= o.start <= 1.0, "method.start",
            f"must be a fraction in [0, 1], got {o.start}")
    require(o.start <= o.end <= 1.0, "method.end",
            f"must be in [method.start, 1] = [{o.start}, 1], got {o.end}")
    if o.factor is not None:
        require(o.schedule == "exp", "method.factor",
                f"only used by method.schedule=exp (got {o.schedule!r}); drop it")
        require(o.factor >= 1 and math.isfinite(o.factor), "method.factor",
                f"must be >= 1 (T rises), got {o.factor}; official values 1.03-1.06")
    require(0 < o.sgdr_cycle <= 1, "method.sgdr_cycle",
            f"must be in (0, 1], got {o.sgdr_cycle}")
    require(o.sgdr_mult >= 1 and math.isfinite(o.sgdr_mult), "method.sgdr_mult",
            f"must be >= 1, got {o.sgdr_mult}")
    require(o.sbn_every >= 1, "method.sbn_every", f"must be >= 1, got {o.sbn_every}")
    require(o.recal_batches >= 0, "method.recal_batches",
            f"must be >= 0 (0 = as many as the test set), got {o.recal_batches}")
    require(o.recal_from == "window" or o.bn == "recal_epoch", "method.recal_from",
            f"only read with method.bn=recal_epoch (got {o.bn!r}); drop it")


def check_candidate_count(o: SlbOptions, w_bits: int) -> None:
    n, cap = len(o.candidates), 2 ** w_bits
    if not n or n == cap:
        return
    require(n < cap, "method.candidates",
            f"{n} values do not fit in {w_bits} bit(s) (at most {cap}); "
            f"pass --w-bits {math.ceil(math.log2(n))} or fewer values")
    require(o.allow_any_count, "method.candidates",
            f"{n} values at {w_bits} bit(s), expected {cap}; "
            f"give {cap} values, change --w-bits, or set method.allow_any_count=true")


# --------------------------------------------------------------------------- the layer state

class SlbWeight(WeightQuantizer):
    """One layer's logits A, the candidate set V and the current T.

    A is stored candidates-first and flattened, shape (n, weight.numel()): the softmax over
    the candidates is then ~20x faster on the CPU for small n (see
    :func:`slb_weight_candidates_first`), and ``Module.to(memory_format=torch.channels_last)``
    (which refuses 5-D tensors) leaves it alone. :meth:`logits_view` gives it as
    weight.shape + (n,), the layout of :func:`slb_weight`, without a copy.
    """

    latent = ("logits",)

    def __init__(self, weight: torch.Tensor, bits: int, candidates: torch.Tensor,
                 logits: torch.Tensor):
        super().__init__(weight, bits)
        self.logits = nn.Parameter(logits.reshape(-1, logits.shape[-1]).t().contiguous())
        self.register_buffer("candidates", candidates.to(logits))
        # T as a buffer, not a Python float: torch.compile does not recompile when it changes
        self.register_buffer("inv_temperature", torch.ones((), dtype=logits.dtype),
                             persistent=False)
        self.register_buffer("prev_codes", self.codes())  # for flip_ratio; survives a resume
        self.hard = False  # hard_end: the training forward uses W_q (set every epoch/step)

    def logits_view(self) -> torch.Tensor:
        return self.logits.t().view(*self.shape, self.logits.shape[0])

    def forward(self) -> torch.Tensor:
        if self.hard:
            return _HardSlbWeight.apply(self.logits, self.candidates).view(self.shape)
        return slb_weight_candidates_first(self.logits, self.candidates,
                                           self.inv_temperature).view(self.shape)

    @torch.no_grad()
    def codes(self) -> torch.Tensor:
        return argmax_rows(self.logits).view(self.shape).to(code_dtype(self.logits.shape[0]))

    @torch.no_grad()
    def deployed_weight(self) -> torch.Tensor:
        """W_q (eq. 4) in one pass over A, equal bit for bit to ``decode(**export())``."""
        return argmax_rows(self.logits, self.candidates).view(self.shape)

    @torch.no_grad()
    def export(self) -> dict[str, torch.Tensor]:
        return {"codes": self.codes(), "levels": self.candidates.clone(),
                "scale": torch.ones((), dtype=self.candidates.dtype,
                                    device=self.candidates.device)}


def slb_layers(model: nn.Module) -> Iterator[SlbWeight]:
    for _, layer in quant_layers(model):
        if isinstance(layer.wq, SlbWeight):
            yield layer.wq


# --------------------------------------------------------------------------- the method

@register
class Slb(Method):
    name = "slb"
    display_name = "SLB"
    internal_metrics = {
        # the task's headline score with the continuous weights: test_acc_continuous (%) for
        # classification, test_psnr_continuous (dB) for super-resolution
        "{score}_continuous": ("continuous-state {score_short} ({score_unit})", "score"),
        "temperature": ("temperature tau", (0.0, None)),
        "quant_gap": ("quant_gap", (0.0, None)),
    }
    log_scale_metrics = ("temperature",)
    bits = frozenset(range(1, 9))
    default_bits = 1
    Options = SlbOptions
    bench_variants = {f"bn={m}": {"bn": m} for m in BN_MODES} | {
        "bn=sbn,every=4": {"bn": "sbn", "sbn_every": 4}}

    def __init__(self, options: SlbOptions, w_bits: int):
        super().__init__(options, w_bits)
        check_candidate_count(options, w_bits)
        self.candidates = (torch.tensor(options.candidates) if options.candidates
                           else default_candidates(w_bits))
        self.inv_temperature = options.t0
        self.state_bn = StateBNMode(options.bn, options.sbn_every, options.recal_batches)
        self.flip_ratio = 0.0
        self._fp_state: dict[str, torch.Tensor] | None = None
        self.epoch = 0                             # the epoch being trained (0-based)
        self.recal_from_epoch: int | None = None   # bn=recal_epoch: first_recal_epoch

    # --- construction
    @classmethod
    def parse_options(cls, raw: dict[str, Any]) -> SlbOptions:
        options = parse_options(SlbOptions, raw, "method")
        validate_options(options)
        return options

    @classmethod
    def check_options(cls, options: SlbOptions, w_bits: int, a_bits: int) -> None:
        check_candidate_count(options, w_bits)

    @classmethod
    def inert_options(cls, options: SlbOptions) -> set[str]:
        """hard_end off and recal_from unused or "first" compute what the code did before
        these options existed (calibration from the first epoch)."""
        inert = set() if options.hard_end else {"hard_end"}
        if options.bn != "recal_epoch" or options.recal_from == "first":
            inert.add("recal_from")
        return inert

    def make_quantizer(self, layer: nn.Module, name: str) -> SlbWeight:
        w = layer.weight.detach()
        v = self.candidates.to(device=w.device, dtype=w.dtype)
        if self.opt.init == "from_fp":
            logits = fp_logits(self._fp_weight(name, w), v)
        else:
            logits = torch.randn(*w.shape, len(v), dtype=w.dtype, device=w.device)
            logits.mul_(self.opt.init_std)
        return SlbWeight(w, self.w_bits, v, logits)

    def fp_quantizer(self, layer: Any, name: str) -> SlbWeight:
        """From a trained fp network (init.source): the from_fp logits of its weight."""
        w = layer.weight.detach()
        v = self.candidates.to(w)
        return SlbWeight(w, self.w_bits, v, fp_logits(w, v))

    def _fp_weight(self, name: str, w: torch.Tensor) -> torch.Tensor:
        if not self.opt.init_from:
            return w
        if self._fp_state is None:
            self._fp_state = load_fp_state(self.opt.init_from)
        keys = (f"{name}.wq.weight", f"{name}.weight")
        found = next((self._fp_state[k] for k in keys if k in self._fp_state), None)
        require(found is not None, "method.init_from",
                f"{self.opt.init_from} has no weight for layer {name!r} (looked for "
                f"{list(keys)}); give a checkpoint of the same model")
        require(tuple(found.shape) == tuple(w.shape), "method.init_from",
                f"{self.opt.init_from}: {name} has shape {tuple(found.shape)}, the model "
                f"{tuple(w.shape)}; give a checkpoint of the same model and width")
        return found.to(w)

    def prepare(self, model: nn.Module, run: Any) -> None:
        self._fp_state = None
        self.state_bn.prepare(model)

    # --- temperature
    def _set_temperature(self, model: nn.Module, progress: Progress) -> None:
        self.inv_temperature = inv_temperature(self.opt, progress)
        hard = self.opt.hard_end and window_ended(self.opt, progress)
        for wq in slb_layers(model):
            wq.inv_temperature.fill_(self.inv_temperature)
            wq.hard = hard

    def on_epoch_start(self, model: nn.Module, progress: Progress) -> None:
        self.epoch = progress.epoch
        if self.recal_from_epoch is None:
            self.recal_from_epoch = first_recal_epoch(self.opt, progress.epochs,
                                                      progress.steps_per_epoch)
        self._set_temperature(model, progress)

    def before_step(self, model: nn.Module, progress: Progress) -> None:
        if self.opt.granularity == "step":
            self._set_temperature(model, progress)

    # --- batch normalization (methods/_statebn.py)
    def after_step(self, model, x, y, progress) -> None:
        self.state_bn.after_step(model, x, progress.step)

    def after_epoch(self, model: nn.Module, run: Any) -> None:
        flips = total = 0
        for wq in slb_layers(model):
            codes = wq.codes()
            flips += int((codes != wq.prev_codes).sum())
            total += codes.numel()
            wq.prev_codes.copy_(codes)
        self.flip_ratio = flips / max(1, total)
        self.state_bn.after_epoch(model, run, due=self.epoch >= (self.recal_from_epoch or 0))

    def after_training(self, model: nn.Module, run: Any) -> None:
        self.state_bn.after_training(model, run)

    def changed_after_training(self) -> str:
        return self.state_bn.changed_after_training()

    # --- deployment and reporting
    def deployed(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        return self.state_bn.deployed(model)

    @torch.no_grad()
    def scalars(self, model: nn.Module, run: Any) -> dict[str, float]:
        gaps, entropies = [], []
        for wq in slb_layers(model):
            w_c, w_q = wq(), wq.deployed_weight()
            tiny = torch.finfo(w_q.dtype).tiny
            gaps.append(float(torch.linalg.vector_norm(w_c - w_q)
                              / torch.linalg.vector_norm(w_q).clamp_min(tiny)))
            entropies.append(float(softmax_entropy(wq.logits, wq.inv_temperature, 0).mean()))
        _, score_continuous = run.evaluate(model)
        return {"inv_temperature": self.inv_temperature,
                "temperature": 1.0 / self.inv_temperature,
                "quant_gap": sum(gaps) / max(1, len(gaps)),
                "flip_ratio": self.flip_ratio,
                "entropy": sum(entropies) / max(1, len(entropies)),
                f"{run.score.column}_continuous": score_continuous}

    def state_dict(self) -> dict[str, Any]:
        return {"calibrated": self.state_bn.calibrated}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state_bn.calibrated = bool(state.get("calibrated", False))
