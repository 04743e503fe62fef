"""Shared test helpers: tiny configs, short runs, the shared CIFAR-10 JPEG copy."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness import config, records
from harness.run import resolve

pytest_plugins = ["slurm_fixture"]

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CIFAR_JPEG = SHARED / "data" / "cifar10-jpeg"

# tests never write the user's image cache
os.environ.setdefault("SLBENCH_CACHE", "off")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def tiny_cfg(method: str = "fp", sets: list[str] | None = None, **flags) -> config.RunConfig:
    """A config that trains in about a second: small_cnn at width 0.25 on 300 digits."""
    base = {"method": method, "epochs": 2, "batch_size": 64, "progress": "none",
            "data.subset_train": 300, "data.subset_test": 200, "model.width": 0.25,
            "optim.lr": 0.05}
    base.update(flags)
    return resolve.build(flags=base, sets=sets or [])


def metrics_without_timing(run_dir: Path) -> pd.DataFrame:
    df = pd.read_csv(Path(run_dir) / "metrics.csv")
    return df.drop(columns=records.TIMING_COLUMNS)


@pytest.fixture
def cifar_jpeg() -> Path:
    if not (CIFAR_JPEG / "train").is_dir():
        pytest.skip(f"{CIFAR_JPEG} not present")
    return CIFAR_JPEG


class Interrupt(BaseException):
    """Raised inside training to simulate a kill between two epochs."""


def run_interrupted(cfg: config.RunConfig, run_dir: Path, stop_before_epoch: int, monkeypatch,
                    echo=lambda s: None) -> None:
    """Train until ``stop_before_epoch`` (0-based) starts, then die as a killed job would."""
    from harness.run import rundir, trainer

    original = trainer.Trainer.train_epoch

    def train_epoch(self, e):
        if e == stop_before_epoch:
            raise Interrupt()
        return original(self, e)

    with monkeypatch.context() as m:
        m.setattr(trainer.Trainer, "train_epoch", train_epoch)
        with pytest.raises(Interrupt):
            rundir.run(cfg, run_dir, echo=echo)


def preempt(job_id: str, stderr, timeout: float = 120) -> None:
    """Preemption as SLURM does it, in its order: SIGTERM (submitit logs and ignores it), then,
    once the job has caught it, USR2 (checkpoint and requeue). Two back-to-back scancel calls
    may arrive in either order: USR2 first makes submitit requeue as for a time-out, and the
    late SIGTERM then kills its `scontrol requeue`. ``stderr()``: the job's stderr so far."""
    import subprocess
    import time

    subprocess.run(["scancel", job_id, "--signal", "SIGTERM"], check=True)
    deadline = time.monotonic() + timeout
    while "Bypassing signal SIGTERM" not in stderr():
        assert time.monotonic() < deadline, f"job {job_id} never caught SIGTERM: {stderr()}"
        time.sleep(0.1)
    subprocess.run(["scancel", job_id, "--signal", "USR2"], check=True)
