"""`python -m harness selftest` on the CPU: the whole command at small sizes (every section
but torch.compile, DDP with gloo), a failed or crashing check failing it, the DDP comparison
telling a wrong shard apart, the compile switch, the epoch target and the inputs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, tiny_cfg
from harness.cli import main
from harness.deploy import export
from harness.tasks.classify import loader
from harness.tools import bench
from harness.tools.selftest import checks as selftest_checks
from harness.tools.selftest import ddp as selftest_ddp
from methods.base import Progress

SMALL = ["--device", "cpu", "--dataset", "digits", "--model", "small_cnn", "--width", "0.25",
         "--batch-size", "64", "--epochs", "2", "--train-images", "640", "--test-images", "200",
         "--timing-epochs", "1", "--bench-rounds", "1", "--bench-steps", "1",
         "--bench-bits", "1", "--packing-ks", "1", "2", "--packing-steps", "3"]


def _only_dir(out: Path) -> Path:
    dirs = list(out.iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def _checks(summary: dict) -> dict[tuple[str, str], dict]:
    return {(c["section"], c["name"]): c for c in summary["checks"]}


@pytest.mark.slow
def test_selftest_runs_end_to_end_on_the_cpu(tmp_path):
    """The command itself, in a fresh process: every section except torch.compile (its own
    test below), with fp and SLB; JSON and markdown complete and honest about skips."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "harness", "selftest", *SMALL, "--methods",
                           "fp", "slb", "--skip", "compile", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folder = _only_dir(out)
    assert folder.name.startswith("selftest-") and folder.name.endswith("-cpu")
    assert f"wrote {folder / 'selftest.json'}" in proc.stdout
    s = json.loads((folder / "selftest.json").read_text())
    assert s["format"] == "slbench-selftest/1" and s["ok"] is True
    assert s["env"]["device"] == "cpu" and s["env"]["gpu_name"] == "none"
    assert s["env"]["torch"] == torch.__version__ and s["env"]["gpu_count"] == 0
    checks = _checks(s)
    assert all(c["status"] == "pass" for c in s["checks"]), \
        [c for c in s["checks"] if c["status"] != "pass"]
    for label in ("fp W32/A32", "slb W1/A32", "slb W2/A32"):
        for what in ("trains", "loss falls", "deployed == export", "same seed, same run"):
            assert ("train", f"{label}: {what}") in checks, (label, what)
        fig = checks[("train", f"{label}: deployed == export")]["figures"]
        assert fig["same_class"] == fig["test_images"] == 200
        assert fig["rebuilt_acc"] == fig["final_test_acc"]
        assert checks[("train", f"{label}: same seed, same run")]["figures"]["steps"] == 20
    for label in ("fp W32/A32", "slb W1/A32"):
        for switch in ("channels_last", "amp"):
            for what in ("trains", "loss falls", "deployed == export"):
                assert ("switches", f"{label} [{switch}]: {what}") in checks
    assert [r["variant"] for r in s["epoch_times"]] == ["default", "channels_last", "amp",
                                                        "channels_last+amp"]
    assert all(r["train_images"] == 640 and r["steps_per_epoch"] == 10 and r["epoch_s"]
               for r in s["epoch_times"])
    ratios = {r["variant"]: r for r in s["ratios"]}
    assert ratios["fp"]["vs_fp"] == 1.0 and "slb[bn=sbn]-w1" in ratios and "bare" in ratios
    ddp = {name for section, name in checks if section == "ddp"}
    assert ddp == {"slb W1/A32, 2 processes (gloo): trains",
                   "first gradient equals one process on the same global batch",
                   "replicas identical", "distributed evaluation",
                   "one process on whole batches"}
    assert checks[("ddp", "first gradient equals one process on the same global batch")][
        "figures"]["rel_diff"] < selftest_ddp.DDP_GRAD_RTOL
    assert [r["k"] for r in s["packing"]] == [1, 2]
    assert all(r["images_per_s"] > 0 and len(r["per_process_images_per_s"]) == r["k"]
               for r in s["packing"])
    assert any("suggested [executor] runs_per_gpu = " in n for n in s["notes"])
    skipped = {k["what"] for k in s["skipped"]}
    assert skipped == {"compile", "CUDA path"}
    assert {t["status"] for t in s["targets"]} == {"n/a"}  # no H100 here: nothing to judge
    md = (folder / "selftest.md").read_text()
    n = len(s["checks"])
    assert f"all {n} checks passed" in md
    assert "## Skipped" in md and "--skip compile" in md and "## fp epoch times" in md
    assert (folder / "runs" / "train-slb-w1" / "a" / "deployed.pt").is_file()


def test_a_failed_or_crashing_check_fails_the_selftest(tmp_path, monkeypatch, capsys):
    """A check that fails and one that raises are both failed checks (the second with its
    traceback); the selftest carries on, writes its summary and exits 1."""
    monkeypatch.setattr(selftest_checks, "LOSS_FALL", 0.0)  # no loss falls to zero

    def broken_export(*args, **kwargs):
        raise RuntimeError("export broke")

    monkeypatch.setattr(export, "export", broken_export)
    rc = main(["selftest", *SMALL, "--methods", "fp", "--skip", "switches", "epoch", "packing",
               "ratios", "ddp", "--out", str(tmp_path)])
    assert rc == 1
    assert not torch.are_deterministic_algorithms_enabled()  # settings restored
    s = json.loads((_only_dir(tmp_path) / "selftest.json").read_text())
    checks = _checks(s)
    assert s["ok"] is False
    assert checks[("train", "fp W32/A32: loss falls")]["status"] == "fail"
    crashed = checks[("train", "fp W32/A32: deployed == export")]
    assert crashed["status"] == "fail" and "RuntimeError: export broke" in crashed["detail"]
    assert "broken_export" in crashed["traceback"]
    assert checks[("train", "fp W32/A32: same seed, same run")]["status"] == "pass"
    out = capsys.readouterr().out
    assert "FAILED [train] fp W32/A32: loss falls" in out
    assert "**2 of 4 checks FAILED**" in (_only_dir(tmp_path) / "selftest.md").read_text()


def _shard_grads(cfg, data, rows: slice) -> dict[str, torch.Tensor]:
    """One process's first gradient on some rows of the first batch (no all-reduce)."""
    t = selftest_checks.recording_trainer(cfg, Path("/nonexistent"), data)
    t.build()
    t.method.on_epoch_start(t.model, t.progress(0))
    x, y = next(iter(t.data.train_batches(cfg.batch_size, t.gen)))
    t.step(x[rows], y[rows], Progress(0, cfg.epochs, 0, t.steps_per_epoch))
    return t.on_step.first_grads


def test_ddp_comparison_tells_a_wrong_shard_from_a_right_one():
    """The gradient check with real gradients: the pair's mean (what DDP all-reduces) passes;
    one rank's half alone (a rank that skipped the all-reduce or took the wrong rows) fails,
    and so does a buffer that differs between the replicas."""
    cfg = tiny_cfg("slb", w_bits=1)
    data = loader.load(cfg.data, torch.device("cpu"))
    emulated = selftest_ddp.sharded_first_grads(cfg, data, world=2)
    halves = [_shard_grads(cfg, data, slice(r, None, 2)) for r in (0, 1)]
    mean = {k: (halves[0][k] + halves[1][k]) / 2 for k in emulated}
    assert selftest_ddp.rel_diff(mean, emulated) == 0.0
    assert selftest_ddp.rel_diff(halves[0], emulated) > 0.3
    state = {"w": torch.ones(3), "bn.running_mean": torch.zeros(3)}
    rows = [{"train_loss": 1.0}]

    def rank(grads, st):
        return {"first_grads": grads, "state": st, "final_test_acc": 50.0,
                "alone_test_acc": 50.0, "losses": torch.tensor([2.0]), "steps": 5, "rows": rows}

    single = {"losses": torch.tensor([2.0]), "steps": 5, "rows": rows, "final_test_acc": 50.0,
              "grad_rel_diff": 0.2}
    good = {c.name: c.status for c in selftest_ddp.compare_ddp(
        [rank(mean, state), rank(mean, state)], emulated, single)}
    assert set(good.values()) == {"pass"}
    drifted = dict(state, **{"bn.running_mean": torch.tensor([0.0, 0.0, 1e-3])})
    bad = {c.name: c.status for c in selftest_ddp.compare_ddp(
        [rank(halves[0], state), rank(halves[0], drifted)], emulated, single)}
    assert bad["first gradient equals one process on the same global batch"] == "fail"
    assert bad["replicas identical"] == "fail"


@pytest.mark.slow
def test_compile_switch_trains_and_deploys_as_exported(tmp_path):
    """channels_last + bf16 autocast + torch.compile, as on the GPU, on a tiny model (the
    compilation costs 40-90 s on this 2-core machine, cold)."""
    cfg = tiny_cfg("fp", epochs=2, **{"data.subset_train": 256},
                   **selftest_checks.SWITCHES["channels_last+amp+compile"])
    data = loader.load(cfg.data, torch.device("cpu"))
    t, summary = selftest_checks.train_once(cfg, tmp_path / "run", data)
    assert summary.status == "completed" and t.forward is not t.model  # compiled
    falls, fig = selftest_checks.loss_falls(t)
    assert falls and fig["steps"] == 8, fig
    ok, detail, fig = selftest_checks.deployed_equals_export(t, summary, tmp_path / "run", data)
    assert ok, detail
    assert fig["same_class"] == fig["test_images"] == 200


def test_time_epochs_times_the_trainers_real_epochs(tmp_path):
    cfg = tiny_cfg("fp", epochs=4)
    t = selftest_checks.recording_trainer(cfg, tmp_path)
    t.build()
    fig = bench.time_epochs(t, epochs=2)
    assert len(fig["epoch_s"]) == 2 and all(s > 0 for s in fig["epoch_s"])
    assert fig["train_images"] == 300 and fig["steps_per_epoch"] == 5
    assert t.step_count == 3 * 5  # one warm-up epoch and two timed ones
    assert fig["images_per_s"] == 300 / fig["median_epoch_s"]
    assert fig["train_loss"][1] < fig["train_loss"][0]


def test_epoch_target_judges_only_h100_class_gpus_at_the_target_size():
    full = {"model": "resnet20", "width": 1.0, "batch_size": 128, "train_images": 50_000}
    assert bench.epoch_target("NVIDIA H100 80GB HBM3", full, 2.4, "fp")[0] == "PASS"
    assert bench.epoch_target("NVIDIA H200", full, 2.6, "fp") == (
        "MISS", "fp: 2.60 s per full CIFAR-10 epoch (target <= 2.5 s)")
    status, line = bench.epoch_target("NVIDIA A100-SXM4-40GB", full, 1.0, "fp")
    assert status == "n/a" and "H100-class" in line
    status, line = bench.epoch_target("NVIDIA H100", dict(full, width=0.5), 1.0, "fp")
    assert status == "n/a" and "width 0.5 (target: 1.0)" in line


def test_inputs_are_checked_before_any_work(tmp_path, capsys):
    (tmp_path / "pickles").mkdir()
    (tmp_path / "pickles" / "data_batch_1").write_bytes(b"")
    (tmp_path / "jpeg" / "train").mkdir(parents=True)
    assert selftest_checks.detect_dataset(str(tmp_path / "pickles"), False) == "cifar10"
    assert selftest_checks.detect_dataset(str(tmp_path / "jpeg"), False) == "imagefolder"
    cases = [(["--device", "cpu", "--data-root", str(tmp_path)], "--data-root"),
             (["--device", "cpu"], "--data-root"),
             (["--device", "cpu", "--dataset", "digits", "--methods", "slbb"], "--methods"),
             (["--device", "cpu", "--dataset", "digits", "--epochs", "0"], "--epochs")]
    if not torch.cuda.is_available():
        cases.append((["--dataset", "digits"], "device"))  # --device cuda is the default
    for argv, field in cases:
        assert main(["selftest", *argv, "--out", str(tmp_path / "out")]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {field}:") and "\n" not in err, err
    assert not (tmp_path / "out").exists()  # nothing written for a mistake


def test_nvidia_driver_is_read_from_proc(tmp_path):
    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 "
                    "22:23:56 UTC 2024\nGCC version:  gcc version 12.3.0\n")
    assert selftest_checks.nvidia_driver(proc) == "550.54.15"


def test_a_selftest_never_overwrites_an_earlier_one(tmp_path):
    a = selftest_checks.unique_dir(tmp_path, "selftest-x-cpu")
    b = selftest_checks.unique_dir(tmp_path, "selftest-x-cpu")
    assert a != b and a.is_dir() and b.name == "selftest-x-cpu-2"


def test_packing_suggests_the_smallest_k_near_the_best_throughput():
    from harness.tools.selftest import packing

    rows = [{"k": 1, "images_per_s": 100.0}, {"k": 2, "images_per_s": 180.0},
            {"k": 4, "images_per_s": 200.0}, {"k": 8, "images_per_s": 196.0}]
    assert packing.suggest(rows) == 4            # 8 is within 5% of 4's, but 4 is smaller
    rows[1]["images_per_s"] = 191.0              # 2 is now within 5% of the best (200)
    assert packing.suggest(rows) == 2
