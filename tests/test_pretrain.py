"""Pretraining as a stage: every method's hook from a trained full-precision run
(init.source; methods/base.py init_from_fp, fp_quantizer, calibrate_from_fp).

The stated tolerance: at >= 4 bits the deployed network keeps the fp network's test accuracy
at step 0 within TOLERANCE points (fp itself exactly); binarised networks cannot, and their
method docstrings say so: for them the test checks that every deployed sign is the fp
weight's sign."""
from __future__ import annotations

import sys

import pytest
import torch

from conftest import tiny_cfg
from harness import records
from harness.errors import UserError
from harness.run import rundir
from harness.run.trainer import Trainer
from methods.base import load_all, quant_layers

TOLERANCE = 2.0   # points of test accuracy at step 0, at >= 4 bits
SIZE = {"data.subset_train": 600, "data.subset_test": 300, "model.width": 0.5}


@pytest.fixture(scope="module")
def fp_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pre") / "fp"
    summary = rundir.run(tiny_cfg("fp", epochs=4, **SIZE), run_dir, echo=lambda s: None)
    assert summary.status == "completed" and summary.final_test_acc > 80
    return run_dir, summary.final_test_acc


def step_zero(method: str, bits: int, run_dir, source: str = "") -> Trainer:
    flags = {**SIZE, "w_bits": bits, **({"init.source": source, "init.epochs": 4}
                                        if source else {})}
    run_dir.mkdir(parents=True, exist_ok=True)
    t = Trainer(tiny_cfg(method, epochs=4, **flags), run_dir, echo=lambda s: None)
    t.build()
    return t


def widest(cls) -> int:
    return max(b for b in cls.bits if b <= 8) if cls.bits != {32} else 32


@pytest.mark.parametrize("method", sorted(load_all()))
def test_each_methods_fp_init_keeps_the_fp_accuracy_at_step_0_or_says_why_not(
        method, fp_run, tmp_path):
    fp_dir, fp_acc = fp_run
    cls = load_all()[method]
    bits = widest(cls)
    t = step_zero(method, bits, tmp_path / "pre", str(fp_dir))
    acc = t.evaluate()["test_acc"]
    scratch = step_zero(method, bits, tmp_path / "scratch").evaluate()["test_acc"]
    assert scratch < fp_acc - 40                      # the fp network's accuracy is not free
    if bits == 32:
        assert acc == fp_acc                          # the same network
    elif bits >= 4:
        assert abs(acc - fp_acc) <= TOLERANCE, (method, bits, acc, fp_acc)
    else:                                             # binarised: said, and signs checked
        doc = " ".join(sys.modules[cls.__module__].__doc__.split())
        assert "cannot keep the fp accuracy at step 0" in doc
        fp_state = torch.load(fp_dir / "checkpoint.pt", weights_only=True)["model"]
        for name, layer in quant_layers(t.model):
            codes = layer.wq.export()["codes"].bool()
            assert torch.equal(codes, fp_state[f"{name}.wq.weight"] >= 0), name


def test_a_pretrained_run_trains_from_its_source_and_says_so(fp_run, tmp_path):
    fp_dir, _ = fp_run
    cfg = tiny_cfg("dorefa", epochs=2, w_bits=4, **SIZE,
                   **{"init.source": str(fp_dir), "init.epochs": 4})
    s = rundir.run(cfg, tmp_path / "q", echo=lambda s: None)
    assert s.status == "completed" and s.epochs_completed == 2
    assert records.load_run(tmp_path / "q").config["init"] == {"source": str(fp_dir),
                                                                "epochs": 4}


def test_a_source_that_is_not_completed_stops_the_run_before_any_training(fp_run, tmp_path):
    fp_dir, _ = fp_run
    with pytest.raises(UserError, match="init.source.*must be completed first"):
        step_zero("ste", 1, tmp_path / "a", str(tmp_path / "nowhere"))
    quantized = tmp_path / "ste"
    rundir.run(tiny_cfg("ste", epochs=1, **SIZE), quantized, echo=lambda s: None)
    with pytest.raises(UserError, match="is a ste run; start from a full-precision"):
        step_zero("ste", 1, tmp_path / "b", str(quantized))
    with pytest.raises(UserError, match="init.epochs"):
        tiny_cfg("ste", **{"init.epochs": 3})
    with pytest.raises(UserError, match="init.source"):
        rundir.run(tiny_cfg("ste", epochs=1, **SIZE, **{"init.source": str(tmp_path / "x")}),
                   tmp_path / "c", echo=lambda s: None)
    s = records.read_summary(tmp_path / "c")
    assert s.status == "failed" and "must be completed first" in s.error
    assert not (tmp_path / "c" / "metrics.csv").exists() or \
        records.load_run(tmp_path / "c").summary.epochs_completed == 0
