"""The training core: schedules, parameter groups, records, divergence, kill-and-resume, and
a real run."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, metrics_without_timing, tiny_cfg
from harness import config, files, records
from harness.run import optim, resolve, rundir, trainer
from harness.tasks.classify import Classify
from methods.base import Method


def test_lr_schedules():
    o = config.OptimConfig(schedule="cosine")
    assert optim.lr_factor(0, 10, 4, o) == 1.0
    assert optim.lr_factor(20, 10, 4, o) == pytest.approx(0.5)          # half way
    step = config.OptimConfig(schedule="step", milestones=(2, 3), gamma=0.1)
    assert [optim.lr_factor(s, 10, 4, step) for s in (19, 20, 29, 30)] == \
        pytest.approx([1, 0.1, 0.1, 0.01])
    warm = config.OptimConfig(schedule="constant", warmup_epochs=1)
    assert [optim.lr_factor(s, 4, 3, warm) for s in (0, 3, 4)] == [0.25, 1.0, 1.0]
    wc = config.OptimConfig(schedule="cosine", warmup_epochs=1)
    assert optim.lr_factor(4 + 4, 4, 3, wc) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))


def test_weight_decay_groups_exclude_bn_and_quantizer_params(tmp_path):
    cfg = tiny_cfg("ste", a_bits=2, sets=["optim.wd_exclude_bn=true",
                                          "optim.wd_exclude_quant=true"])
    t = trainer.Trainer(cfg, tmp_path)
    t.build()
    groups = {g["kind"]: g for g in t.optimizer.param_groups}
    assert groups["weight"]["weight_decay"] == cfg.optim.weight_decay > 0
    assert groups["bn"]["weight_decay"] == 0 and groups["quant"]["weight_decay"] == 0
    n_pact = sum(1 for n, _ in t.model.named_parameters() if n.endswith("act.alpha"))
    assert len(groups["quant"]["params"]) == n_pact == 3
    total = sum(len(g["params"]) for g in t.optimizer.param_groups)
    assert total == len(list(t.model.parameters()))


def test_records_contract(tmp_path):
    s = rundir.run(tiny_cfg("ste"), tmp_path, echo=lambda m: None)
    summary = files.read_json(tmp_path / "summary.json")
    assert summary["status"] == "completed" == s.status
    for key in ("final_test_acc", "best_test_acc", "epochs_completed", "wall_time_s",
                "peak_mem_mb", "method_param_bytes", "optimizer_state_bytes"):
        assert summary[key] is not None, key
    assert set(summary["env"]) >= {"python", "torch", "device_name", "harness_commit", "hostname"}
    cfg = files.read_json(tmp_path / "config.json")
    assert cfg["config_hash"] == resolve.config_hash(tiny_cfg("ste"))
    m = records.load_run(tmp_path).metrics
    assert list(m.columns[:8]) == list(Classify.columns) and len(m) == 2
    assert summary["final_test_acc"] == m["test_acc"].iloc[-1]
    assert not list(tmp_path.glob(f".*{files.TEMP_SUFFIX}"))  # no temp files left behind


def test_nan_loss_stops_the_run_as_diverged(tmp_path, monkeypatch):
    monkeypatch.setattr(Method, "loss", lambda self, model: torch.tensor(float("nan")))
    s = rundir.run(tiny_cfg("fp", epochs=3), tmp_path, echo=lambda m: None)
    assert s.status == "diverged"
    assert files.read_json(tmp_path / "summary.json")["status"] == "diverged"
    assert records.load_run(tmp_path).status == "diverged"


def test_process_killed_mid_run_resumes_identically(tmp_path):
    """SIGKILL a real `python -m harness run` after its first epoch; re-running completes it
    with the same metrics as an uninterrupted run."""
    args = ["--method", "dorefa", "--w-bits", "2", "--epochs", "4", "--set", "progress=none",
            "--set", "data.subset_train=600", "--set", "model.width=0.5"]
    cmd = [sys.executable, "-m", "harness", "run", *args]
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(cmd + ["--out", str(full)], check=True, cwd=ROOT, capture_output=True)
    hold = tmp_path / "hold"   # the run waits before its second epoch: no race with the clock
    hold.mkdir()
    (hold / "hold-cut").touch()
    env = {**os.environ, "SLBENCH_HOLD_DIR": str(hold), "SLBENCH_HOLD_AT_EPOCH": "1"}
    proc = subprocess.Popen(cmd + ["--out", str(cut)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            env=env)
    deadline = time.time() + 300
    while not (hold / "cut.held").exists():
        assert proc.poll() is None and time.time() < deadline, "the run never reached epoch 1"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows = len(metrics_without_timing(cut))
    assert rows == 1, rows
    assert json.loads((cut / "summary.json").read_text())["status"] == "running"
    subprocess.run(cmd + ["--out", str(cut)], check=True, cwd=ROOT, capture_output=True)
    assert metrics_without_timing(full).equals(metrics_without_timing(cut))
    assert json.loads((cut / "summary.json").read_text())["status"] == "completed"
    log = (cut / "log.txt").read_text()
    assert "resumed at epoch" in log


def test_short_real_run_on_cifar10_jpeg_learns(cifar_jpeg, tmp_path):
    cfg = resolve.build(flags={"method": "fp", "model.name": "resnet20", "data.name": "imagefolder",
                         "data.root": str(cifar_jpeg), "data.subset_train": 1000,
                         "data.subset_test": 500, "model.width": 0.5, "epochs": 4,
                         "batch_size": 64, "optim.lr": 0.05, "progress": "none"})
    s = rundir.run(cfg, tmp_path, echo=lambda m: None)
    assert s.status == "completed"
    assert s.final_test_acc > 20.0, s.final_test_acc   # chance is 10%


def test_raise_on_sigterm_gives_back_the_handler_it_replaced():
    import signal

    from harness.run.signals import Interrupted, raise_on_sigterm, restore_sigterm

    seen = []
    mine = lambda signum, frame: seen.append(signum)  # noqa: E731
    old = signal.signal(signal.SIGTERM, mine)
    try:
        previous = raise_on_sigterm()
        assert previous is mine
        with pytest.raises(Interrupted):
            signal.raise_signal(signal.SIGTERM)
        restore_sigterm(previous)
        assert signal.getsignal(signal.SIGTERM) is mine
        signal.raise_signal(signal.SIGTERM)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, old)
