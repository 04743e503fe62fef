"""Tasks are a plug-in axis: a toy task registered here (a card and a runtime, as a folder
under harness/tasks/ would hold them) goes through config, run, a sweep, status and show
without any change to the harness."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from harness import config, records
from harness.cli import main
from harness.config import opt
from harness.run import resolve, rundir
from harness.tasks import base as tasks
from harness.tasks.classify import loader
from harness.tasks.classify import models as classify_models
from harness.tasks.runtime import TaskRuntime
from harness.tools import describe

NAME = "toy_brightness"


@dataclasses.dataclass(frozen=True)
class BrightnessOptions:
    gain: float = opt(2.0, "target = gain x the image's mean normalised pixel", lo=0,
                      hi=100, lo_open=True)


class Brightness(tasks.Task):
    name = NAME
    description = "toy regression: an image's mean brightness (tests only)"
    Options = BrightnessOptions
    columns = ("epoch", "train_loss", "test_loss", "test_mse", "lr", "epoch_time_s",
               "samples_per_s")
    metrics = (tasks.Metric("test_mse", "test MSE", "", (0.0, None), higher_is_better=False,
                            digits=4),)
    runtime_module = __name__


class _Targets:
    """Digits with each image's brightness as its target."""

    def __init__(self, data, gain: float):
        self.data, self.gain = data, gain
        for name in ("num_train", "in_channels", "image_size", "fingerprint"):
            setattr(self, name, getattr(data, name))
        self.num_classes = 1

    def steps_per_epoch(self, batch_size):
        return self.data.steps_per_epoch(batch_size)

    def _target(self, x):
        return self.gain * x.mean(dim=(1, 2, 3))

    def train_batches(self, batch_size, gen, augment=None):
        for x, _ in self.data.train_batches(batch_size, gen, augment):
            yield x, self._target(x)

    def test_batches(self, batch_size):
        for x, _ in self.data.test_batches(batch_size):
            yield x, self._target(x)


class BrightnessRuntime(TaskRuntime):
    card = Brightness
    models = {"small_cnn": classify_models.MODELS["small_cnn"]}
    datasets = {"digits": "scikit-learn digits (built in)"}

    def load_data(self, cfg, device):
        return _Targets(loader.load(cfg.data, device), cfg.task_options.gain)

    def loss(self, out, y, cfg):
        return F.mse_loss(out.float()[:, 0], y)

    @torch.no_grad()
    def evaluate(self, model, data, cfg, device, dist):
        was = model.training
        model.eval()
        total, n = 0.0, 0
        for x, y in data.test_batches(cfg.data.eval_batch_size):
            total += float(F.mse_loss(model(x).float()[:, 0], y, reduction="sum"))
            n += len(y)
        model.train(was)
        return {"test_loss": total / n, "test_mse": total / n}

    def summary_fields(self, rows, final, data):
        scores = [r["test_mse"] for r in rows] + ([final["test_mse"]] if final else [])
        return {"task": NAME, "metric": "test_mse",
                "final_metric": None if final is None else final["test_mse"],
                "best_metric": min(scores) if scores else None,
                "final_metrics": dict(final or {})}


RUNTIME = BrightnessRuntime()


@pytest.fixture(autouse=True)
def toy_task():
    tasks.register_task(Brightness)
    yield
    tasks.TASKS.pop(NAME, None)


FLAGS = {"task": NAME, "model.name": "small_cnn", "data.name": "digits", "epochs": 2,
         "data.subset_train": 300, "data.subset_test": 100, "batch_size": 64, "device": "cpu",
         "progress": "none", "optim.lr": 0.02}


def test_the_card_owns_its_config_section():
    keys = {r["key"] for r in describe.config_keys()}
    assert {f"{NAME}.gain", "sr.scale", "task"} <= keys
    cfg = resolve.build(flags={**FLAGS, f"{NAME}.gain": 3.0})
    assert cfg.task_options == BrightnessOptions(gain=3.0)
    assert config.to_dict(cfg)[NAME] == {"gain": 3.0} and config.to_dict(cfg)["task"] == NAME
    with pytest.raises(Exception, match=f"{NAME}.gain"):
        resolve.build(flags={**FLAGS, f"{NAME}.gain": -1.0})
    with pytest.raises(Exception, match="sr.scale"):
        resolve.build(flags={**FLAGS, "sr.scale": 2})
    with pytest.raises(Exception, match="model of task sr"):
        resolve.build(flags={**FLAGS, "model.name": "srresnet"})


def test_a_run_of_the_toy_task_is_recorded_and_validated_by_its_card(tmp_path):
    cfg = resolve.build(flags=FLAGS)
    s = rundir.run(cfg, tmp_path / "run", echo=lambda line: None)
    assert s.status == "completed" and s.task == NAME and s.metric == "test_mse"
    rec = records.load_run(tmp_path / "run")
    assert rec.status == "completed", rec.problem
    assert {"epoch", "train_loss", "test_mse"} <= set(rec.metrics.columns)
    rows = rec.metrics["test_mse"].tolist()
    assert s.best_metric == min(rows + [s.final_metric])  # lower is better: the best is a min
    assert s.score_text() == f"{s.final_metric:.4f}"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    forged = {**summary, "best_metric": max(rows)}
    (tmp_path / "run" / "summary.json").write_text(json.dumps(forged))
    assert "best test_mse" in records.load_run(tmp_path / "run").problem


def test_a_study_of_the_toy_task_sweeps_and_shows_its_score(tmp_path, capsys):
    spec = tmp_path / "toy.toml"
    spec.write_text(f'''
[study]
name = "toy"
[recipe]
task = "{NAME}"
model = {{ name = "small_cnn" }}
data = {{ name = "digits", subset_train = 300, subset_test = 100 }}
optim = {{ lr = 0.02 }}
batch_size = 64
device = "cpu"
[grid]
bits = [[1, 32]]
epochs = [2]
seeds = [0]
[variants.fp]
method = "fp"
reference = true
[variants.ste]
method = "ste"
''')
    assert main(["sweep", str(spec), "--executor", "debug", "--results",
                 str(tmp_path / "res")]) == 0
    capsys.readouterr()
    assert main(["status", str(tmp_path / "res" / "toy")]) == 0
    out = capsys.readouterr().out
    assert "2/2 runs done: completed 2" in out and out.count("mean test MSE 0.") == 2, out
    run = next((tmp_path / "res" / "toy" / "runs").glob("ste_*"))
    assert main(["show", str(run)]) == 0
    assert "final deployed test MSE 0." in capsys.readouterr().out
