"""ONNX export checked by onnxruntime, and the bit-packed weights: every method at every bit
width it supports, with A32 and with quantized activations (sign, PACT, DoReFa)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from conftest import ROOT, tiny_cfg
from harness import records
from harness.costs import opcount
from harness.deploy import contract, export, packing
from harness.deploy import onnx as onnx_export
from harness.run import rundir, trainer
from methods.act import DorefaAct, PactAct, SignAct, export_form
from methods.base import UserError, load_all

METHODS = load_all()
# (method, w_bits, a_bits, a_quant): every supported width at A32 and with quantized
# activations (sign at W1, PACT at min(w, 4) bits otherwise), and each method's default width
# with 4-bit DoReFa activations
CASES = [(m, b, a, "pact") for m in sorted(METHODS) for b in sorted(METHODS[m].bits)
         for a in (32, 1 if b == 1 else min(b, 4))]
CASES += [(m, METHODS[m].default_bits if m != "fp" else 32, 4, "dorefa") for m in sorted(METHODS)]


def _trained(method, w_bits, a_bits, a_quant, tmp_path, steps=2):
    """A set-up trainer after a few training steps (BN statistics and quantizer state move)."""
    cfg = tiny_cfg(method, w_bits=w_bits, a_bits=a_bits, a_quant=a_quant)
    t = trainer.Trainer(cfg, tmp_path)
    t.build()
    for i, (x, y) in enumerate(t.data.train_batches(cfg.batch_size, t.gen)):
        if i == steps:
            break
        t.step(x, y, t.progress(0))
        t.step_count += 1
    t.model.eval()
    return t


def _deployed(t):
    blob = export.deployed_blob(t)
    model = export.rebuild_model(t.cfg, blob["num_classes"], blob["in_channels"],
                            blob["image_size"], blob["layers"], blob["state"])
    return blob, model.eval()


@pytest.mark.parametrize("method,w_bits,a_bits,a_quant", CASES)
def test_onnx_matches_the_harness_and_packing_is_exact(method, w_bits, a_bits, a_quant,
                                                       tmp_path):
    t = _trained(method, w_bits, a_bits, a_quant, tmp_path)
    blob, model = _deployed(t)
    # the rebuilt network is the trained one in its deployed state
    with torch.no_grad(), t.method.deployed(t.model):
        x = next(iter(t.data.test_batches(100)))[0]
        assert torch.equal(model(x), t.model(x))
    # ONNX under onnxruntime: same predictions, logits equal up to float rounding
    path = tmp_path / "m.onnx"
    onnx_export.write_onnx(model, blob["input"], path)
    res = onnx_export.check(path, model, contract.raw_test_batches(t.data, 100), blob["input"])
    assert res.n == t.data.num_test and res.ok, res.line()
    assert res.flips == 0 and res.differ == 0 and res.acc_onnx == res.acc_torch, res.line()
    if a_bits == 32:  # no threshold in the network: only float rounding separates the two
        assert res.max_abs_diff <= 1e-4 * max(1.0, res.max_abs_logit), res.line()
    # the deployed weights in the file are the discrete weights times their scale
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    for name, e in blob["layers"].items():
        if "codes" not in e:
            continue
        w = export.decode(e["codes"], e["levels"], e["scale"]).numpy()
        assert any(v.shape == w.shape and np.array_equal(v, w) for v in inits.values()), name
    # packed at the bit width, and rebuilt bit for bit
    size = packing.write_packed(tmp_path / "p.zip", blob)
    back = packing.read_packed(tmp_path / "p.zip")
    for name, e in blob["layers"].items():
        for k, v in e.items():
            got = back["layers"][name][k]
            assert (got == v) if k == "bits" else (got.dtype == v.dtype and torch.equal(got, v))
    assert back["state"].keys() == blob["state"].keys()
    assert all(torch.equal(back["state"][k], v) for k, v in blob["state"].items())
    again = export.rebuild_model(t.cfg, back["num_classes"], back["in_channels"],
                            back["image_size"], back["layers"], back["state"]).eval()
    assert export._same_network(again, model)
    sizes = packing.file_sizes(blob)
    assert sizes["packed_bytes"] == size and (size < sizes["fp32_bytes"] or w_bits == 32)
    # the payload is the model size harness.costs.opcount computes from the config alone (plus the
    # 8-byte batch-norm batch counters)
    counters = sum(k.endswith("num_batches_tracked") for k in blob["state"])
    inf = opcount.inference_cost(t.cfg, blob["num_classes"], blob["in_channels"],
                                 blob["image_size"])
    assert sizes["payload_bytes"] == inf["size_bytes"] + 8 * counters


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8, 9])
def test_pack_codes_sizes_and_round_trip(bits):
    g = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2 ** bits, (7, 3, 3, 5), generator=g)
    buf = packing.pack_codes(codes, bits)
    assert buf.dtype == np.uint8 and buf.size == packing.packed_bytes(codes.numel(), bits)
    assert buf.size == -(-codes.numel() * bits // 8)
    back = packing.unpack_codes(buf, bits, tuple(codes.shape), torch.int64)
    assert torch.equal(back, codes)


def test_pack_codes_layout_by_hand():
    # LSB first: two 4-bit codes per byte, low nibble first; eight 1-bit codes per byte
    assert packing.pack_codes(torch.tensor([1, 2, 15, 0]), 4).tolist() == [0x21, 0x0F]
    assert packing.pack_codes(torch.tensor([1, 0, 0, 0, 0, 0, 0, 1, 1]), 1).tolist() == [0x81, 1]
    # 3 bits straddle bytes: 5 = 101, 6 = 011 (LSB first) -> bits 1,0,1,0,1,1 -> 0b110101
    assert packing.pack_codes(torch.tensor([5, 6]), 3).tolist() == [0b110101]
    with pytest.raises(ValueError, match="cannot be packed"):
        packing.pack_codes(torch.tensor([4]), 2)


@pytest.mark.parametrize("act", [SignAct(), PactAct(3, 2.5), DorefaAct(2), torch.nn.Identity()])
def test_export_form_is_the_training_forward_bit_for_bit(act):
    x = torch.linspace(-3, 3, 1001).reshape(1, 1, 7, 143)
    assert torch.equal(export_form(act)(x), act(x))


def test_tolerance_is_one_in_250_images():
    assert onnx_export.allowed(200) == 1
    assert onnx_export.allowed(10_000) == 40
    assert onnx_export.allowed(50_000) == 200


def test_check_counts_flips_and_differing_images(tmp_path):
    """A wrong export is caught: the same network with one BN's statistics changed."""
    t = _trained("slb", 1, 1, "pact", tmp_path)
    blob, model = _deployed(t)
    path = tmp_path / "m.onnx"
    onnx_export.write_onnx(model, blob["input"], path)
    wrong = export.rebuild_model(t.cfg, blob["num_classes"], blob["in_channels"],
                            blob["image_size"], blob["layers"], blob["state"]).eval()
    bn = next(m for m in wrong.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean += 0.5
    res = onnx_export.check(path, wrong, contract.raw_test_batches(t.data, 100), blob["input"])
    assert not res.ok and res.differ > res.allowed and res.differ >= 0.9 * res.n, res.line()


def test_a_method_activation_quantizer_is_refused_naming_the_layer(tmp_path):
    cfg = tiny_cfg("lqnet", w_bits=2, a_bits=2, sets=["method.act_quant=lqnet"])
    t = trainer.Trainer(cfg, tmp_path)
    t.build()  # LQ-Net's prepare() installs its own activation quantizer
    first = next(n for n, m in t.model.named_modules() if hasattr(m, "wq"))
    with pytest.raises(UserError, match=f"layer '{first}'.*LqAct, not the recipe's PactAct"):
        export.deployed_blob(t)


def _run(tmp_path, method="slb", bits=1, a_bits=1):
    out = tmp_path / "run"
    s = rundir.run(tiny_cfg(method, w_bits=bits, a_bits=a_bits), out, echo=lambda s: None)
    assert s.status == "completed"
    return out


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "harness", "export", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True)


def test_cli_export_onnx_writes_checks_and_prints_both_accuracies(tmp_path):
    out = _run(tmp_path)
    p = _cli(out, "--format", "onnx")
    assert p.returncode == 0, p.stderr
    assert (out / "deployed.onnx").is_file() and (out / packing.FILENAME).is_file()
    line = next(s for s in p.stdout.splitlines() if "onnxruntime" in s)
    acc = records.read_summary(out).final_test_acc
    assert f"vs harness {acc:.2f}%" in line and "0 predictions differ" in line
    assert "bit for bit" in p.stdout
    ops = pd.read_csv(out / "ops.csv")
    summary = records.read_summary(out)
    assert list(ops.columns) == ["layer", "macs", "w_bits", "a_bits", "bops", "flops", "params"]
    assert ops["macs"].sum() == summary.inference_cost["macs"]
    assert ops["bops"].sum() == summary.inference_cost["bops"]
    r = export.export_run(out, fmt="onnx", echo=lambda s: None)
    assert r.ok and r.onnx.acc_onnx == r.onnx.acc_torch == acc
    assert r.packed_bytes == (out / packing.FILENAME).stat().st_size < r.fp32_bytes


def test_cli_export_bad_input_is_one_line(tmp_path):
    p = _cli(tmp_path / "nowhere", "--format", "onnx")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "RUN_DIR" in p.stderr
    p = _cli(tmp_path, "--format", "tflite")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--format" in p.stderr
    cfg = tiny_cfg("ste", w_bits=1)
    run_dir = tmp_path / "unfinished"
    rundir.prepare_run_dir(run_dir, cfg)
    p = _cli(run_dir, "--format", "onnx")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "finish it first" in p.stderr
    with pytest.raises(UserError, match="--format"):
        export.export_run(run_dir, fmt="tflite")
