"""Every registered method gets these tests for free (registry-driven, like timm's models).

Each method adds its own hand-computed golden values in tests/test_<method>.py.
"""
from __future__ import annotations

import inspect
import math

import pytest
import torch

from conftest import metrics_without_timing, run_interrupted, tiny_cfg
from harness.deploy.export import export_and_check
from harness.run import rundir, trainer
from methods.base import UserError, decode, load_all, quant_layers

METHODS = sorted(load_all())
CASES = [(m, b) for m in METHODS for b in sorted(load_all()[m].bits & {1, 2, 4, 32})]


def _trainer(method, bits, tmp_path, **kw):
    t = trainer.Trainer(tiny_cfg(method, w_bits=bits, **kw), tmp_path)
    t.build()
    return t


def _one_epoch(t):
    return t.train_epoch(0)


@pytest.mark.parametrize("name", METHODS)
def test_a_method_is_named_as_its_file(name):
    module = load_all()[name].__module__.removeprefix("methods.")
    assert module == name, (f"methods/{module}.py registers name = {name!r}; set name = "
                            f"{module!r} (its file's name; a copy of methods/_template.py "
                            "must rename it)")


@pytest.mark.parametrize("name", METHODS)
def test_method_file_documents_its_rules(name):
    doc = inspect.getmodule(load_all()[name]).__doc__ or ""
    assert len(doc) > 300, f"methods/{name}.py needs its paper/equations/forward/backward docstring"
    low = doc.lower()
    for word in ("forward", "backward"):
        assert word in low, f"methods/{name}.py docstring does not state the {word} rule"


@pytest.mark.parametrize("name", METHODS)
def test_unsupported_bits_is_a_user_error(name):
    cls = load_all()[name]
    bad = next(b for b in (3, 5, 6, 7, 8, 16, 32, 1, 2) if b not in cls.bits)
    with pytest.raises(UserError, match="w_bits"):
        tiny_cfg(name, w_bits=bad)


@pytest.mark.parametrize("name,bits", CASES)
def test_one_epoch_trains_and_deploys_discrete_weights(name, bits, tmp_path):
    t = _trainer(name, bits, tmp_path)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    stats = _one_epoch(t)
    assert t.step_count == t.steps_per_epoch and math.isfinite(stats["train_loss"])
    changed = [k for k, v in t.model.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, before[k])]
    assert any(".wq." in k for k in changed), "no weight-quantizer state changed in an epoch"
    with torch.no_grad(), t.method.deployed(t.model):
        for lname, layer in quant_layers(t.model):
            e = layer.wq.export()
            if e is None:
                assert bits == 32
                continue
            codes, levels, scale = e["codes"], e["levels"], e["scale"]
            assert codes.shape == layer.weight.shape
            assert not codes.is_floating_point()
            assert int(codes.min()) >= 0 and int(codes.max()) < levels.shape[-1] <= 2 ** bits
            w = layer.weight
            assert torch.equal(w, decode(codes, levels, scale)), lname
            per_channel = levels.dim() == 2 or scale.dim() == 1
            groups = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
            for g in groups:
                assert g.unique().numel() <= 2 ** bits, f"{lname}: more than 2^b values"


@pytest.mark.parametrize("name,bits", CASES)
def test_same_seed_same_metrics_and_export_round_trip(name, bits, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    sa = rundir.run(tiny_cfg(name, w_bits=bits), a, echo=lambda s: None)
    rundir.run(tiny_cfg(name, w_bits=bits), b, echo=lambda s: None)
    assert sa.status == "completed"
    assert metrics_without_timing(a).equals(metrics_without_timing(b))
    acc, want = export_and_check(a, echo=lambda s: None)
    assert acc == want
    blob = torch.load(a / "deployed.pt", weights_only=True)
    for entry in blob["layers"].values():
        if "codes" in entry:
            assert entry["bits"] == bits and not entry["codes"].is_floating_point()


@pytest.mark.parametrize("name", METHODS)
def test_killed_run_resumes_to_the_same_result(name, tmp_path, monkeypatch):
    bits = load_all()[name].default_bits
    cfg = tiny_cfg(name, w_bits=bits, epochs=3)
    full, cut = tmp_path / "full", tmp_path / "cut"
    rundir.run(cfg, full, echo=lambda s: None)
    run_interrupted(cfg, cut, stop_before_epoch=1, monkeypatch=monkeypatch)
    assert len(metrics_without_timing(cut)) == 1
    rundir.run(cfg, cut, echo=lambda s: None)
    assert metrics_without_timing(full).equals(metrics_without_timing(cut))
    fa = torch.load(full / "checkpoint.pt", weights_only=True)["model"]
    fb = torch.load(cut / "checkpoint.pt", weights_only=True)["model"]
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)
