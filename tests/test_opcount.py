"""Operation counts and model size checked by hand; training FLOPs per step (State BN's extra
forward measured exactly); the counting leaves the run untouched; summary.json carries it."""
from __future__ import annotations

import pytest
import torch

from conftest import metrics_without_timing, run_interrupted, tiny_cfg
from harness import records
from harness.costs import opcount
from harness.run import resolve, rundir, trainer


def test_resnet20_macs_by_hand():
    # conv1 3->16 at 32x32; stage 1: six 16->16 convs at 32x32; stages 2 and 3: a strided
    # 3x3 conv, a 1x1 shortcut and five 3x3 convs at 16x16 and 8x8; fc 64->10
    conv1 = 3 * 16 * 9 * 32 * 32
    stage1 = 6 * 16 * 16 * 9 * 32 * 32
    stage2 = 16 * 32 * 9 * 16 * 16 + 16 * 32 * 16 * 16 + 5 * 32 * 32 * 9 * 16 * 16
    stage3 = 32 * 64 * 9 * 8 * 8 + 32 * 64 * 8 * 8 + 5 * 64 * 64 * 9 * 8 * 8
    fc = 64 * 10
    total = conv1 + stage1 + stage2 + stage3 + fc
    assert total == 40_813_184
    for w, a in ((1, 1), (1, 32), (2, 32), (4, 32)):
        cfg = resolve.build(flags={"method": "slb", "w_bits": w, "a_bits": a,
                                   "model.name": "resnet20"})
        r = opcount.inference_cost(cfg, 10, 3, (32, 32))
        fp_layers = conv1 + fc                   # first conv and last linear stay fp
        assert r["macs"] == total and r["flops"] == fp_layers
        assert r["bops"] == (total - fp_layers) * w * a
        assert r["ops"] == r["bops"] / 64 + fp_layers
    fp = opcount.inference_cost(resolve.build(flags={"method": "fp", "model.name": "resnet20"}),
                                10, 3, (32, 32))
    assert fp["bops"] == 0 and fp["flops"] == fp["ops"] == total


def test_small_cnn_dorefa_w2a2_size_and_ops_by_hand():
    # small_cnn width 0.25 on 1x8x8 digits: channels 8, 16, 32, 32; pools after convs 2 and 3
    cfg = tiny_cfg("dorefa", w_bits=2, a_bits=2)
    r = opcount.inference_cost(cfg, 10, 1, (8, 8))
    macs = [1 * 8 * 9 * 64, 8 * 16 * 9 * 64, 16 * 32 * 9 * 16, 32 * 32 * 9 * 4, 32 * 10]
    assert [row["macs"] for row in r["layers"]] == macs
    quantized = sum(macs[1:4])
    assert r["bops"] == quantized * 2 * 2 == 737_280
    assert r["flops"] == macs[0] + macs[4] == 4_928
    assert r["ops"] == 737_280 / 64 + 4_928 == 16_448
    # size: 2-bit codes of the three middle convs; at 32 bits: the first conv's and the fc's
    # weights (+ fc bias), four BNs x (weight, bias, mean, var), one PACT alpha and DoReFa's
    # levels [4] + scale per quantized layer
    codes = (8 * 16 * 9 + 16 * 32 * 9 + 32 * 32 * 9) * 2
    floats = 72 + (320 + 10) + 4 * (8 + 16 + 32 + 32) + 3 * 1 + 3 * (4 + 1)
    assert r["code_bytes"] == codes / 8 == 3_744
    assert r["size_bytes"] == codes / 8 + 4 * floats == 6_832


def _step_flops(method, sets=(), **flags):
    t = trainer.Trainer(tiny_cfg(method, sets=list(sets), **flags), "/nonexistent")
    t.build()
    return t, opcount.count_training_flops(t.counting_copy())


def test_state_bn_adds_exactly_one_forward_per_step():
    # one forward of a 64-image batch: 2 FLOPs per MAC (FlopCounterMode's convention)
    forward = 2 * 64 * opcount.inference_cost(tiny_cfg("fp"), 10, 1, (8, 8))["macs"]
    _, fp = _step_flops("fp")
    _, sbn = _step_flops("slb", w_bits=1, sets=["method.bn=sbn"])
    _, every2 = _step_flops("slb", w_bits=1, sets=["method.bn=sbn", "method.sbn_every=2"])
    _, none = _step_flops("slb", w_bits=1, sets=["method.bn=none"])
    assert fp["steps_counted"] == opcount.TRAIN_STEPS == 4
    assert sbn["flops_per_step"] == none["flops_per_step"] + forward
    assert every2["flops_per_step"] == none["flops_per_step"] + forward / 2
    # without State BN, SLB adds only its weights' expectation over the n = 2 candidates
    # (one matrix product of 2 x 2 x weights FLOPs for the 14,976 quantized weights)
    assert none["flops_per_step"] == fp["flops_per_step"] + 2 * 2 * 14_976
    # forward + backward of the fp network: the backward of every conv but the first costs
    # two forwards (input and weight gradients); the first needs the weight gradient only
    macs = [1 * 8 * 9 * 64, 8 * 16 * 9 * 64, 16 * 32 * 9 * 16, 32 * 32 * 9 * 4, 32 * 10]
    assert fp["flops_per_step"] == 2 * 64 * (3 * sum(macs) - macs[0])


def test_recalibration_is_counted_once_per_epoch():
    t, rec = _step_flops("slb", w_bits=1, sets=["method.bn=recal_epoch",
                                                 "method.recal_batches=3"])
    forward = 2 * 64 * opcount.inference_cost(t.cfg, 10, 1, (8, 8))["macs"]
    assert rec["epoch_hook_flops"] == 3 * forward
    per_epoch = rec["flops_per_step"] * t.steps_per_epoch + 3 * forward
    assert rec["total_flops"] == per_epoch * t.cfg.epochs


def test_counting_leaves_the_run_untouched(tmp_path, monkeypatch):
    cfg = tiny_cfg("slb", w_bits=1)
    rundir.run(cfg, tmp_path / "counted", echo=lambda s: None)
    monkeypatch.setattr(trainer.Trainer, "measure_costs", lambda self: None)
    rundir.run(cfg, tmp_path / "not", echo=lambda s: None)
    a, b = tmp_path / "counted", tmp_path / "not"
    assert metrics_without_timing(a).equals(metrics_without_timing(b))
    ma = torch.load(a / "checkpoint.pt", weights_only=True)["model"]
    mb = torch.load(b / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    s = records.read_summary(a)
    assert s.inference_cost["ops"] == opcount.inference_cost(cfg, 10, 1, (8, 8))["ops"]
    assert s.inference_cost["input_shape"] == [1, 8, 8] and s.inference_cost["num_classes"] == 10
    tc = s.training_cost
    assert tc["flops_per_step"] > 0 and tc["steps_per_epoch"] == 5
    assert tc["step_time_s"] == pytest.approx(s.mean_epoch_time_s / 5)
    assert tc["device_hours"] == pytest.approx(s.wall_time_s / 3600)
    assert records.read_summary(b).training_cost == {}


def test_summary_cost_fields_round_trip_and_old_records_parse():
    s = records.RunSummary(status="completed", epochs=2, inference_cost={"ops": 1.5},
                           training_cost={"flops_per_step": 7.0})
    back = records.RunSummary.from_json(s.to_json())
    assert back.inference_cost == {"ops": 1.5} and back.training_cost == {"flops_per_step": 7.0}
    old = records.RunSummary.from_json({"status": "completed", "epochs": 2})
    assert old.inference_cost == {} and old.training_cost == {}
    with pytest.raises(ValueError, match="training_cost"):
        records.RunSummary.from_json({"status": "completed", "epochs": 2, "training_cost": 3})


def test_input_shape_of_named_datasets_and_unknown_folders(tmp_path):
    assert opcount.input_shape_of({"data": {"name": "cifar100"}}) == (3, (32, 32), 100)
    assert opcount.input_shape_of({"data": {"name": "imagefolder",
                                            "root": str(tmp_path / "none")}}) is None
    # the registry's shape is the loaded data's (digits is the one loadable everywhere)
    from harness.tasks.classify import loader

    d = loader.load(resolve.build(flags={"data.name": "digits", "device": "cpu"}).data,
                      torch.device("cpu"))
    assert opcount.input_shape_of({"data": {"name": "digits"}}) == (
        d.in_channels, tuple(d.image_size), d.num_classes)


def test_a_resumed_run_keeps_the_costs_its_first_attempt_counted(tmp_path, monkeypatch):
    """Counting copies the model and runs extra steps (and SLB's hooks): a resume (a requeued
    job) reuses what the first attempt recorded instead of counting again."""
    cfg = tiny_cfg("slb", epochs=2, sets=["method.bn=recal_epoch", "method.recal_batches=2"])
    run_interrupted(cfg, tmp_path, 1, monkeypatch)
    first = records.read_summary(tmp_path)
    assert first.training_cost["flops_per_step"] > 0

    def no_second_count(*a, **k):
        raise AssertionError("counted again on resume")

    monkeypatch.setattr(opcount, "count_training_flops", no_second_count)
    monkeypatch.setattr(opcount, "inference_cost", no_second_count)
    s = rundir.run(cfg, tmp_path, echo=lambda m: None)
    assert s.status == "completed"
    assert s.inference_cost == first.inference_cost
    fresh = ("step_time_s", "device_hours", "world_size", "threads")
    assert {k: v for k, v in s.training_cost.items() if k not in fresh} == \
        {k: v for k, v in first.training_cost.items() if k not in fresh}
