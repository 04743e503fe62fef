"""The deployed network as ONNX, run by onnxruntime and compared with the harness.

What the file holds (``RUN_DIR/deployed.onnx``, opset ``OPSET``, input ``image`` [N, C, H, W]
**uint8** (raw images, 0..255) with a free batch axis, output ``logits`` [N, classes]; the
input contract of harness.deploy.contract, also in the file's ``metadata_props``):

- the normalisation first: Cast to float, ``/ 255``, ``- mean``, ``/ std`` with the training
  set's per-channel statistics (the harness's own arithmetic, so raw images in give the
  harness's logits);
- every quantized conv/linear as a standard Conv/Gemm whose weight initializer is the
  discrete weight times its scale (``methods.base.decode`` of the exported codes, levels and
  scale: at most 2^b distinct values per tensor or output channel);
- the recipe's activation quantizers as standard arithmetic, from ``methods.act.export_form``
  (the same functions as the training forward, without autograd.Function): sign as
  GreaterOrEqual + Where; PACT as Clip + Min + Mul + Round + Mul (with Reciprocal for n/alpha,
  as torch computes it); DoReFa as Clip + Mul + Round + Div (ONNX Round, like torch.round,
  rounds half to even);
- everything else as it is: batch norm as BatchNormalization with the deployed state's
  statistics (not folded into the convolutions, so the discrete weights stay visible), the
  full-precision first and last layers, pooling, additions.

Exporter: torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``). The
torch.export-based default of torch 2.14 needs the onnxscript package, writes the weights to
a separate ``.data`` file, and took ~3 s per ResNet-20 against 0.35 s here; the TorchScript
exporter is deprecated upstream but present in the pinned torch, needs nothing beyond onnx,
and writes one self-contained file. ``training=PRESERVE`` with the model in eval mode stops
its eval-mode pass from folding batch norm into the convolutions.

The check (:func:`check`) runs the file with onnxruntime's CPU provider, default session
options (as a deployment would), over the whole test set given as raw uint8 images, and
compares with the harness's deployed network on the same images normalised by the harness,
image by image: an image *differs* when any of its
logits is off by more than ``ATOL + RTOL * |logit|``, and a *flip* is a different predicted
class. Float rounding (another summation order in the convolutions, onnxruntime's fusion of
batch norm into them) moves a value across a sign or rounding threshold of an activation
quantizer now and then, and the rest of the network then differs for that image. The
tolerance is ``MAX_RATE`` = 1 in 250 for both counts (at least one on test sets under 250
images); a wrong export (other weights, statistics or quantizers) moves the logits of nearly
every image. Measured on the whole CIFAR-10 test set (README, Performance): fp ResNet-20, 0
images differ; SLB W1/A1 after 2 epochs on 1,000 images (logits within 0.33 of each other,
so near ties are common), 8 flips and 10 differing images (4 flips with onnxruntime's graph
optimizations off): 1 in 1,000, exactly at a limit of 1 in 1,000. This tolerance leaves 4x
room above the worst seen, while a wrong export differs on >= 90%. The check prints both
accuracies, the counts and the largest logit difference.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness import files
from harness.deploy import contract as input_contract
from methods.act import export_form
from methods.base import UserError, quant_layers

OPSET = 17
MAX_RATE = 4e-3             # images that may differ (and flip), as a fraction of the test set
ATOL, RTOL = 1e-4, 1e-4     # a logit differs when |onnx - torch| > ATOL + RTOL * |torch|


def allowed(n: int) -> int:
    """Images that may differ (and predictions that may flip) among ``n`` test images."""
    return max(1, math.floor(n * MAX_RATE))


def exportable(model: nn.Module) -> nn.Module:
    """A copy of the deployed network in plain tensor ops: every activation quantizer
    replaced by its export form. An activation quantizer without one is a UserError that
    names the layer."""
    model = copy.deepcopy(model).cpu().float().eval()
    for name, layer in quant_layers(model):
        plain = export_form(layer.act)
        if plain is None:
            raise UserError("RUN_DIR", f"layer {name!r}: activation quantizer "
                            f"{type(layer.act).__name__} has no ONNX form (only the recipe's "
                            "sign, PACT and DoReFa quantizers do); it cannot be exported")
        layer.act = plain
    return model


def write_onnx(model: nn.Module, contract: dict, path: Path) -> None:
    """Export the deployed network behind its input contract (see the module docstring) to
    ``path``, with the contract in the file's metadata_props."""
    import onnx

    plain = input_contract.RawInput(exportable(model), contract).eval()
    x = torch.zeros(1, *contract["shape"][1:], dtype=torch.uint8)
    buf = io.BytesIO()  # written to a file only once checked, through the safe file layer
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's deprecation notice
        torch.onnx.export(plain, (x,), buf, dynamo=False, opset_version=OPSET,
                          training=torch.onnx.TrainingMode.PRESERVE,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load_from_string(buf.getvalue())
    onnx.helper.set_model_props(proto, input_contract.metadata(contract))
    proto.doc_string = " ".join(input_contract.lines(contract))
    onnx.checker.check_model(proto, full_check=True)
    files.atomic_write_bytes(Path(path), proto.SerializeToString())


def session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@dataclass
class OnnxCheck:
    n: int
    acc_torch: float            # % of the harness's deployed network on these batches
    acc_onnx: float             # % of the ONNX file under onnxruntime
    flips: int                  # images whose predicted class differs
    differ: int                 # images with a logit off by more than ATOL + RTOL |logit|
    allowed: int                # allowed(n), for each of the two counts
    max_abs_diff: float         # largest |logit difference|
    max_abs_logit: float        # largest |logit| of the harness (the scale of the difference)

    @property
    def ok(self) -> bool:
        return self.flips <= self.allowed and self.differ <= self.allowed

    def line(self) -> str:
        return (f"onnxruntime {self.acc_onnx:.2f}% vs harness {self.acc_torch:.2f}% on {self.n} "
                f"test images; {self.flips} predictions differ and {self.differ} images have "
                f"logits off by more than {ATOL:g} + {RTOL:g}|logit| (allowed {self.allowed} "
                f"each: 1 in {round(1 / MAX_RATE):,}, at least 1); largest logit difference "
                f"{self.max_abs_diff:.3g} (logits up to {self.max_abs_logit:.3g})")


@torch.no_grad()
def check(path: Path, model: nn.Module, raw_batches, contract: dict) -> OnnxCheck:
    """Run ``path`` with onnxruntime on ``raw_batches`` of (uint8 image, label), as a user
    would, and ``model`` (the harness's deployed network) on the same images normalised by
    the harness; compare predictions and logits."""
    sess = session(path)
    # the harness's network behind the contract's normalisation, as the ONNX file has it
    model = input_contract.RawInput(copy.deepcopy(model).cpu().float(), contract).eval()
    n = right_t = right_o = flips = differ = 0
    diff = scale = 0.0
    for x, y in raw_batches:
        x, y = x.detach().cpu().contiguous(), y.cpu()
        ref = model(x)
        out = torch.from_numpy(np.asarray(sess.run(["logits"], {"image": x.numpy()})[0]))
        pt, po = ref.argmax(1), out.argmax(1)
        n += len(y)
        right_t += int((pt == y).sum())
        right_o += int((po == y).sum())
        flips += int((pt != po).sum())
        differ += int(((ref - out).abs() > ATOL + RTOL * ref.abs()).any(1).sum())
        diff = max(diff, float((ref - out).abs().max()))
        scale = max(scale, float(ref.abs().max()))
    return OnnxCheck(n, 100.0 * right_t / n, 100.0 * right_o / n, flips, differ, allowed(n),
                     diff, scale)
