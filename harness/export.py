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
}
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness import config as C
from harness import models, records, tasks
from harness.env import resolve_device
from harness.train import Dist, Trainer
from methods.act import make_act_quantizer
from methods.base import QLayer, UserError, WeightQuantizer, decode, quant_layers, set_module

FORMAT = "slbench-deployed/1"


class FixedWeight(WeightQuantizer):
    """A rebuilt layer's weight: a buffer decoded from the export."""

    def __init__(self, weight: torch.Tensor, bits: int):
        super().__init__(weight, bits)
        self.register_buffer("weight", weight)

    def forward(self) -> torch.Tensor:
        return self.weight


def _load_finished(run_dir: Path) -> tuple[C.RunConfig, records.RunSummary]:
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise UserError("RUN_DIR", f"{str(run_dir)!r} has no config.json; pass a run directory")
    try:
        summary = records.read_summary(run_dir)
        status = summary.status
    except (OSError, ValueError, TypeError):
        summary, status = None, "not started"
    if status != "completed":
        raise UserError("RUN_DIR", f"run in {str(run_dir)!r} is {status}; finish it first with "
                        "`python -m harness run --out RUN_DIR ...`")
    return C.resolve(C.from_dict(records.read_json(cfg_path))), summary


def export(run_dir: Path, device: str | None = None, data=None) -> dict[str, Any]:
    """Build deployed.pt from the run's final checkpoint (in the method's deployed state).

    ``data``: the run's dataset, already loaded (the selftest); default: load it."""
    run_dir = Path(run_dir)
    cfg, _ = _load_finished(run_dir)
    if device:
        cfg = C.resolve(C.from_dict({**C.to_dict(cfg), "device": device}))
    trainer = Trainer(cfg, run_dir)
    trainer.setup(data)
    if not trainer.load_checkpoint() or not trainer.final_done:
        raise UserError("RUN_DIR", f"{run_dir}/checkpoint.pt is missing or not final; "
                        "re-run the training command to finish it")
    model, method = trainer.model, trainer.method
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
    return {"format": FORMAT, "config": C.to_dict(cfg), "config_hash": C.config_hash(cfg),
            "num_classes": trainer.data.num_classes, "in_channels": trainer.data.in_channels,
            "image_size": list(trainer.data.image_size), "layers": layers, "state": state}


def rebuild_model(cfg: C.RunConfig, num_classes: int, in_channels: int, image_size,
                  layers: dict[str, dict[str, Any]], state: dict | None = None) -> nn.Module:
    """The deployed network from export data alone (no method code involved)."""
    model = models.build(cfg, num_classes, in_channels, tuple(image_size), method=None)
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


def load_deployed(path: Path, device: torch.device) -> tuple[C.RunConfig, nn.Module]:
    blob = records.load_tensors(path)
    if blob.get("format") != FORMAT:
        raise UserError("deployed.pt", f"{path} is not a {FORMAT} file")
    cfg = C.resolve(C.from_dict(blob["config"]))
    model = rebuild_model(cfg, blob["num_classes"], blob["in_channels"], blob["image_size"],
                          blob["layers"], blob["state"])
    return cfg, model.to(device)


def export_and_check(run_dir: Path, device: str | None = None,
                     echo=print) -> tuple[float, float]:
    """Write RUN_DIR/deployed.pt, rebuild the network from it, evaluate, compare to summary.

    Returns (rebuilt accuracy, summary final_test_acc); for another task (SR) its score
    (final_metric, e.g. PSNR in dB) in place of the accuracy.
    """
    run_dir = Path(run_dir)
    _, summary = _load_finished(run_dir)
    blob = export(run_dir, device)
    records.atomic_torch_save(run_dir / "deployed.pt", blob)
    cfg, model = load_deployed(run_dir / "deployed.pt",
                               resolve_device(device or blob["config"]["device"]))
    dev = next(model.parameters()).device
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    task = tasks.get(cfg.task)
    data = task.load_data(cfg, dev)
    acc = task.evaluate(model, data, cfg, dev, Dist())[task.primary]
    blob["test_acc"] = acc
    records.atomic_torch_save(run_dir / "deployed.pt", blob)
    n_q = sum(1 for e in blob["layers"].values() if "codes" in e)
    echo(f"wrote {run_dir / 'deployed.pt'}: {n_q} quantized layers; rebuilt {task.primary} "
         f"{acc:.4g} (summary: {summary.result:.4g})")
    return acc, summary.result


def cmd_export(args) -> int:
    acc, want = export_and_check(Path(args.run_dir), args.device)
    if acc != want:
        print(f"error: rebuilt network scores {acc!r}% but summary.json says {want!r}%",
              file=sys.stderr)
        return 1
    return 0
