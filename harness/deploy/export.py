"""Export a finished run's deployed network as codes/levels/scale, and rebuild it from that alone.

deployed.pt = {
  "format": "slbench-deployed/1", "config": resolved config, "config_hash",
  "num_classes", "in_channels", "image_size",
  "layers": {layer name: {"codes", "levels", "scale", "bits"}   (quantized layers)
                         or {"weight"}                           (full-precision weights, fp)},
  "state": every other parameter and buffer of the deployed network (BN statistics of the
           deployed state, activation clip values, full-precision first/last layers),
  "test_acc": the accuracy the rebuilt network reached when exported (for another task than
              classification: its score, e.g. the test PSNR in dB),
  "input": the input contract (harness.deploy.contract: raw uint8 NCHW images, the training
           set's per-channel mean and std, class names, bit widths; None for SR), which
           `export` prints; the network rebuilt from this file takes normalised input,
           ``contract.normalize`` of the raw images, and deployed.onnx takes the raw images
}

Every export also writes RUN_DIR/deployed_packed.zip (harness.deploy.packing: the codes at their
bit width; its size is printed next to the same network's with float32 weights) and checks
that the network rebuilt from it equals the one rebuilt from deployed.pt bit for bit, and
RUN_DIR/ops.csv (harness.costs.opcount: MACs, bits, BOPs, FLOPs and weights of every layer).
``--format onnx`` also writes RUN_DIR/deployed.onnx and runs it with onnxruntime over the
test set (harness.deploy.onnx). A run whose deployed form the export cannot express (an
activation quantizer other than the recipe's, a quantized layer without codes) is refused
with a one-line error naming the layer.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from harness import files, records
from harness.config import RunConfig, to_dict
from harness.costs import opcount
from harness.deploy import contract as input_contract
from harness.deploy import onnx as onnx_export
from harness.deploy import packing
from harness.dist import Dist
from harness.run import checkpoint, resolve
from harness.run.env import resolve_device
from harness.run.trainer import Trainer
from harness.tasks import models
from harness.tasks.base import get as get_task
from methods.act import make_act_quantizer
from methods.base import (
    QLayer,
    UserError,
    WeightQuantizer,
    decode,
    quant_layers,
    require,
    set_module,
)

FORMAT = "slbench-deployed/1"
FORMATS = ("torch", "onnx")  # --format: deployed.pt (+ packed) | also deployed.onnx


class FixedWeight(WeightQuantizer):
    """A rebuilt layer's weight: a buffer decoded from the export."""

    def __init__(self, weight: torch.Tensor, bits: int):
        super().__init__(weight, bits)
        self.register_buffer("weight", weight)

    def forward(self) -> torch.Tensor:
        return self.weight


def _load_finished(run_dir: Path) -> tuple[RunConfig, records.RunSummary]:
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise UserError("RUN_DIR", f"{str(run_dir)!r} has no config.json; pass a run directory")
    try:
        summary = records.read_summary(run_dir)
        status = summary.status
    except FileNotFoundError:
        summary, status = None, "not started"
    except (OSError, ValueError, TypeError) as e:  # a corrupt summary.json: the resume repairs it
        summary, status = None, f"unreadable (summary.json: {str(e)[:160]})"
    if status != "completed":
        raise UserError("RUN_DIR", f"run in {str(run_dir)!r} is {status}; finish it first with "
                        f"`python -m harness run --resume {run_dir}`")
    try:
        raw = files.read_json(cfg_path)
        cfg = resolve.from_dict(raw)
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise UserError("RUN_DIR", f"{cfg_path} is unreadable ({str(e)[:160]}); restore the "
                        "run's config.json") from None
    have, trained = resolve.config_hash(cfg), summary.config_hash or raw.get("config_hash")
    if have != raw.get("config_hash") or have != trained:
        raise UserError("RUN_DIR", f"{cfg_path} was edited: its keys hash to {have}, but the "
                        f"run was trained as {trained}; restore the "
                        "run's own config.json (a changed config is another run: train it with "
                        "`python -m harness run`)")
    return cfg, summary


OUTPUTS = ("deployed.pt", "deployed_packed.zip", "ops.csv")


def check_outputs(run_dir: Path, fmt: str) -> None:
    """Before any work: the folder is writable and no output file is a link or a folder."""
    files.ensure_writable_dir(run_dir, "RUN_DIR", "export writes its files into the run "
                              "directory: make it writable")
    for name in OUTPUTS + (("deployed.onnx",) if fmt == "onnx" else ()):
        files.check_target(run_dir / name)


def export(run_dir: Path, device: str | None = None, data=None) -> dict[str, Any]:
    """Build deployed.pt from the run's final checkpoint (in the method's deployed state).

    ``data``: the run's dataset, already loaded (the selftest); default: load it."""
    run_dir = Path(run_dir)
    cfg, _ = _load_finished(run_dir)
    if device:
        cfg = resolve.from_dict({**to_dict(cfg), "device": device})
    trainer = Trainer(cfg, run_dir, data=data)
    trainer.build()
    if not trainer.restore() or not trainer.finished:
        raise UserError("RUN_DIR", f"{run_dir}/checkpoint.pt is missing or not final; "
                        f"finish the run with `python -m harness run --resume {run_dir}`")
    return deployed_blob(trainer)


def deployed_blob(trainer: Trainer) -> dict[str, Any]:
    """The deployed.pt dictionary of a set-up trainer's model in its current state."""
    cfg, model, method = trainer.cfg, trainer.model, trainer.method
    check_expressible(cfg, model)
    layers: dict[str, dict[str, Any]] = {}
    with torch.no_grad(), method.deployed(model):
        for name, layer in quant_layers(model):
            e = layer.wq.export()
            if e is None:
                layers[name] = {"weight": layer.wq.deployed_weight().cpu()}
            else:
                layers[name] = {k: v.detach().cpu() for k, v in e.items()} | {"bits": layer.wq.bits}
        plain = rebuild_model(cfg, trainer.data.num_classes, trainer.data.in_channels,
                              trainer.data.image_size, layers)
        state = {}
        for key in plain.state_dict():
            if ".wq." in key:
                continue
            modname, _, attr = key.rpartition(".")
            module = model.get_submodule(modname) if modname else model
            state[key] = getattr(module, attr).detach().cpu().clone()
    return {"format": FORMAT, "config": to_dict(cfg), "config_hash": resolve.config_hash(cfg),
            "num_classes": trainer.data.num_classes, "in_channels": trainer.data.in_channels,
            "image_size": list(trainer.data.image_size), "layers": layers, "state": state,
            "input": input_contract.input_contract(trainer.data, cfg, layers)}


def check_expressible(cfg: RunConfig, model: nn.Module) -> None:
    """Refuse (UserError naming the layer) what codes/levels/scale and the recipe's
    activation quantizers cannot express: a method's own activation quantizer, a quantized
    layer without an export, codes outside [0, 2^bits)."""
    recipe = type(make_act_quantizer(cfg.a_bits, cfg.a_quant, cfg.pact_init))
    with torch.no_grad():
        for name, layer in quant_layers(model):
            if type(layer.act) is not recipe:
                raise UserError("RUN_DIR", f"layer {name!r} quantizes its input with "
                                f"{type(layer.act).__name__}, not the recipe's {recipe.__name__}"
                                " (the method replaced it); the export rebuilds the network "
                                "with the recipe's activation quantizers, so it cannot "
                                "express this run")
            wq, e = layer.wq, layer.wq.export()
            if e is None and wq.bits < 32:
                raise UserError("RUN_DIR", f"layer {name!r}: {type(wq).__name__} has "
                                f"{wq.bits}-bit weights but no codes/levels/scale export")
            if e is not None and (int(e["codes"].min()) < 0 or
                                  int(e["codes"].max()) >= 2 ** wq.bits):
                raise UserError("RUN_DIR", f"layer {name!r}: codes outside [0, 2^{wq.bits}) "
                                f"cannot be stored at {wq.bits} bits")


def rebuild_model(cfg: RunConfig, num_classes: int, in_channels: int, image_size,
                  layers: dict[str, dict[str, Any]], state: dict | None = None) -> nn.Module:
    """The deployed network from export data alone (no method code involved)."""
    registry = get_task(cfg.task).runtime().models
    model = models.build(cfg, registry, num_classes, in_channels, tuple(image_size), method=None)
    for name, entry in layers.items():
        layer = model.get_submodule(name)
        if "codes" in entry:
            w = decode(entry["codes"], entry["levels"], entry["scale"])
            bits = int(entry["bits"])
        else:
            w, bits = entry["weight"], 32
        act = make_act_quantizer(cfg.a_bits, cfg.a_quant, cfg.pact_init)
        set_module(model, name, QLayer(layer, FixedWeight(w.clone(), bits), act))
    if state is not None:
        full = dict(state)
        for name, m in quant_layers(model):
            full[f"{name}.wq.weight"] = m.wq.weight
        model.load_state_dict(full, strict=True)
    return model


def load_deployed(path: Path, device: torch.device) -> tuple[RunConfig, nn.Module]:
    blob = checkpoint.load_tensors(path)
    if blob.get("format") != FORMAT:
        raise UserError("deployed.pt", f"{path} is not a {FORMAT} file")
    cfg = resolve.from_dict(blob["config"])
    model = rebuild_model(cfg, blob["num_classes"], blob["in_channels"], blob["image_size"],
                          blob["layers"], blob["state"])
    return cfg, model.to(device)


@dataclass
class ExportResult:
    acc: float                  # accuracy of the network rebuilt from deployed.pt
    want: float                 # summary.json's score (final_test_acc; SR: final_metric)
    packed_bytes: int           # deployed_packed.zip
    fp32_bytes: int             # the same network with float32 weights, same container
    packed_exact: bool          # rebuilt from the packed file == rebuilt from deployed.pt
    onnx: onnx_export.OnnxCheck | None = None

    @property
    def ok(self) -> bool:
        return self.acc == self.want and self.packed_exact and (self.onnx is None or
                                                                self.onnx.ok)


def _same_network(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def export_run(run_dir: Path, device: str | None = None, fmt: str = "torch",
               echo=print) -> ExportResult:
    """Write RUN_DIR/deployed.pt and deployed_packed.zip (and deployed.onnx for ``fmt``
    "onnx"), rebuild the network from each, evaluate, compare with summary.json."""
    require(fmt in FORMATS, "--format", f"unknown format {fmt!r}; choose one of {list(FORMATS)}")
    run_dir = Path(run_dir)
    cfg, summary = _load_finished(run_dir)
    require(fmt != "onnx" or cfg.task == "classify", "--format",
            "the ONNX check compares class predictions: it is for classification runs; "
            "export this run with --format torch")
    check_outputs(run_dir, fmt)
    blob = export(run_dir, device)
    checkpoint.save_tensors(run_dir / "deployed.pt", blob)
    cfg, model = load_deployed(run_dir / "deployed.pt",
                               resolve_device(device or blob["config"]["device"]))
    dev = next(model.parameters()).device
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    task = get_task(cfg.task).runtime()
    score = task.card.headline().column
    data = task.load_data(cfg, dev)
    acc = task.evaluate(model, data, cfg, dev, Dist())[score]
    blob["test_acc"] = acc
    checkpoint.save_tensors(run_dir / "deployed.pt", blob)
    n_q = sum(1 for e in blob["layers"].values() if "codes" in e)
    echo(f"wrote {run_dir / 'deployed.pt'}: {n_q} quantized layers; rebuilt {score} "
         f"{acc:.4g} (summary: {summary.result:.4g})")

    packed = run_dir / packing.FILENAME
    size = packing.write_packed(packed, blob)
    sizes = packing.file_sizes(blob)
    fp32 = sizes["fp32_bytes"]
    unpacked = packing.read_packed(packed)
    again = rebuild_model(cfg, unpacked["num_classes"], unpacked["in_channels"],
                          unpacked["image_size"], unpacked["layers"], unpacked["state"])
    exact = _same_network(again, model.cpu())
    model.to(dev)
    echo(f"wrote {packed}: {size:,} bytes ({sizes['payload_bytes']:,} of tensors), "
         f"{fp32 / size:.1f}x smaller than the same network with float32 weights "
         f"({fp32:,} bytes); rebuilt from it "
         f"{'bit for bit' if exact else 'NOT bit for bit'}")
    result = ExportResult(acc, summary.result, size, fp32, exact)
    inf = opcount.inference_cost(cfg, blob["num_classes"], blob["in_channels"],
                                 blob["image_size"])
    files.atomic_write_text(run_dir / "ops.csv", pd.DataFrame(inf["layers"]).to_csv(index=False))
    echo(f"wrote {run_dir / 'ops.csv'}: MACs, BOPs and FLOPs of every layer; in all "
         f"{inf['macs']:,} MACs, {inf['bops']:,} BOPs, {inf['flops']:,} FLOPs, "
         f"{inf['ops']:,.0f} OPs per image")
    if fmt == "onnx":
        path = run_dir / "deployed.onnx"
        onnx_export.write_onnx(model, blob["input"], path)
        raw = input_contract.raw_test_batches(data, cfg.data.eval_batch_size)
        result.onnx = onnx_export.check(path, model, raw, blob["input"])
        echo(f"wrote {path}: {path.stat().st_size:,} bytes; {result.onnx.line()}")
    if blob["input"] is not None:
        for line in input_contract.lines(blob["input"]):
            echo(line)
    return result


def export_and_check(run_dir: Path, device: str | None = None,
                     echo=print) -> tuple[float, float]:
    """Write RUN_DIR/deployed.pt (and the packed file), rebuild the network from it,
    evaluate, compare to summary. Returns (rebuilt accuracy, summary final_test_acc)."""
    r = export_run(run_dir, device, "torch", echo)
    return r.acc, r.want


def cmd_export(args) -> int:
    r = export_run(Path(args.run_dir), args.device, getattr(args, "format", "torch"))
    if r.acc != r.want:
        print(f"error: rebuilt network scores {r.acc!r}% but summary.json says {r.want!r}%",
              file=sys.stderr)
    if not r.packed_exact:
        print(f"error: the network rebuilt from {packing.FILENAME} differs from deployed.pt's",
              file=sys.stderr)
    if r.onnx is not None and not r.onnx.ok:
        print(f"error: deployed.onnx: {r.onnx.flips} predictions and {r.onnx.differ} images' "
              f"logits differ from the harness's, more than the {r.onnx.allowed} allowed",
              file=sys.stderr)
    return 0 if r.ok else 1
