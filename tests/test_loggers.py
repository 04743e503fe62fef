"""The logging sinks on killed-and-resumed runs: TensorBoard (read back with EventAccumulator,
no "out of order" purge), Weights & Biases offline (its run files read back) and MLflow (a real
`mlflow server` on SQLite, read back with MlflowClient); and a missing package or setting is one
line naming ``loggers`` and the fix, before any work."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, run_interrupted, tiny_cfg
from harness.errors import UserError
from harness.run import loggers, rundir

EPOCHS = 3


def _metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv")


def _numeric_columns(m: pd.DataFrame) -> list[str]:
    return [c for c in m.columns if c != "epoch" and pd.api.types.is_numeric_dtype(m[c])
            and m[c].notna().all()]


# --------------------------------------------------------------------------- TensorBoard

def _tensorboard(logdir: Path, caplog) -> tuple[dict[str, list[tuple[int, float]]], list[str]]:
    """Every scalar EventAccumulator reads (purging orphaned data, as TensorBoard does), and the
    warnings it logged while reading."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="tensorboard"):
        acc = EventAccumulator(str(logdir), purge_orphaned_data=True)
        acc.Reload()
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    return scalars, said


def _tensorboard_equals_metrics(run_dir: Path, caplog) -> None:
    tb, said = _tensorboard(run_dir / "tensorboard", caplog)
    assert not [s for s in said if "out of order" in s.lower() or "purg" in s.lower()], said
    m = _metrics(run_dir)
    assert set(tb) == set(_numeric_columns(m))
    for col in tb:
        assert [s for s, _ in tb[col]] == list(range(1, EPOCHS + 1)), col   # each epoch once
        assert [v for _, v in tb[col]] == pytest.approx(m[col].tolist(), rel=1e-6), col


def test_tensorboard_after_a_kill_and_resume_has_each_epoch_once_and_no_purge(
        tmp_path, monkeypatch, caplog):
    cfg = tiny_cfg("slb", epochs=EPOCHS, sets=['loggers=["tensorboard"]'])
    run_dir = tmp_path / "run"
    run_interrupted(cfg, run_dir, 2, monkeypatch)
    first = sorted((run_dir / "tensorboard").glob("events.*"))
    rundir.run(cfg, run_dir, echo=lambda s: None)
    files = sorted((run_dir / "tensorboard").glob("events.*"))
    assert len(first) == 1 and len(files) == 2 and files[0] == first[0]  # one file per attempt
    # the second attempt's file starts after the first's last step: epoch 3 only
    assert loggers.logged_steps(run_dir / "tensorboard")["test_acc"] == {1, 2, 3}
    _tensorboard_equals_metrics(run_dir, caplog)
    # the hyperparameters and the config text once, from the first attempt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Tensors(loggers.CONFIG_TAG)] == [0]


def test_tensorboard_of_a_run_that_started_over_is_written_again(tmp_path, monkeypatch, caplog):
    cfg = tiny_cfg("slb", epochs=EPOCHS, sets=['loggers=["tensorboard"]'])
    run_dir = tmp_path / "run"
    run_interrupted(cfg, run_dir, 2, monkeypatch)
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")  # the run starts over
    rundir.run(cfg, run_dir, echo=lambda s: None)
    assert len(list((run_dir / "tensorboard").glob("events.*"))) == 1
    _tensorboard_equals_metrics(run_dir, caplog)


# --------------------------------------------------------------------------- Weights & Biases

def _wandb_records(path: Path):
    """The records of a W&B run file (.wandb: a ":W&B" header, then LevelDB-log records in
    32 KiB blocks), parsed with wandb's own protobuf classes."""
    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    pos, parts = 7, []
    while pos + 7 <= len(raw):
        left = 32768 - pos % 32768
        if left < 7:          # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = int.from_bytes(raw[pos + 4: pos + 6], "little"), raw[pos + 6]
        parts.append(raw[pos + 7: pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):    # FULL or LAST: a record is complete
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(b"".join(parts))
            parts = []
            yield rec
        elif kind == 0:
            parts = []


def _wandb_run(folder: Path) -> tuple[dict[str, object], list[dict[str, object]], int | None]:
    """(config, history rows, exit code) of one offline run folder."""
    (path,) = folder.glob("run-*.wandb")
    config, history, exit_code = {}, [], None
    for rec in _wandb_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            config = {u.key: json.loads(u.value_json) for u in rec.run.config.update}
        elif kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                            for i in rec.history.item})
        elif kind == "exit":
            exit_code = rec.exit.exit_code
    return config, history, exit_code


def test_wandb_offline_run_holds_config_and_every_epoch(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    cfg = tiny_cfg("slb", epochs=EPOCHS, sets=['loggers=["wandb"]'])
    run_dir = tmp_path / "run"
    run_interrupted(cfg, run_dir, 2, monkeypatch)
    rundir.run(cfg, run_dir, echo=lambda s: None)
    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    # offline-run-<time to the second>-<id>; W&B adds "-1" when both attempts share a second
    name = re.compile(rf"offline-run-\d{{8}}_\d{{6}}-{loggers.wandb_id(run_dir)}(-\d+)?")
    assert len(folders) == 2 and all(name.fullmatch(f.name) for f in folders), folders
    m = _metrics(run_dir)
    cols = _numeric_columns(m)
    for folder, epochs, code in ((folders[0], [1, 2], 1), (folders[1], [1, 2, 3], 0)):
        config, history, exit_code = _wandb_run(folder)
        assert (config["method"]["name"], config["epochs"], config["w_bits"]) == ("slb", EPOCHS, 1)
        assert [h.get("_step") for h in history] == epochs and exit_code == code, history
        for col in cols:
            assert [h[col] for h in history] == pytest.approx(m[col].tolist()[: len(epochs)],
                                                              rel=1e-6), col


# --------------------------------------------------------------------------- MLflow

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real MLflow tracking server (SQLite backend, artifacts in tmp_path) on a free local
    port; stopped (its whole process group) after the test."""
    pytest.importorskip("mlflow")
    port = _free_port()
    log = open(tmp_path / "mlflow-server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--default-artifact-root", str(tmp_path / "artifacts"), "--workers", "1"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):   # up to 5 minutes on a busy machine; not a timing assertion
            assert proc.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the MLflow server never answered /health")
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_mlflow_run_on_a_real_server_after_a_kill_and_resume(tmp_path, monkeypatch,
                                                            mlflow_server):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "loggers-test")
    cfg = tiny_cfg("slb", epochs=EPOCHS, sets=['loggers=["mlflow"]'])
    run_dir = tmp_path / "run"
    run_interrupted(cfg, run_dir, 2, monkeypatch)
    run_id = json.loads((run_dir / "mlflow.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=mlflow_server)
    assert client.get_run(run_id).info.status == "KILLED"
    rundir.run(cfg, run_dir, echo=lambda s: None)
    exp = client.get_experiment_by_name("loggers-test")
    (run,) = client.search_runs([exp.experiment_id])   # the resumed run went on in the same one
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.info.run_name == "run"
    params = run.data.params
    assert (params["method.name"], params["epochs"], params["w_bits"]) == ("slb", str(EPOCHS), "1")
    assert params["optim.lr"] == "0.05" and params["loggers"] == '["mlflow"]'
    m = _metrics(run_dir)
    for col in _numeric_columns(m):
        history = sorted((h.step, h.value) for h in client.get_metric_history(run_id, col))
        assert [s for s, _ in history] == list(range(1, EPOCHS + 1)), col   # each epoch once
        assert [v for _, v in history] == pytest.approx(m[col].tolist(), rel=1e-6), col


# --------------------------------------------------------------------------- failures

class _Unreachable(loggers.Sink):
    """A tracker whose server is down when the run starts."""

    def start(self, run_dir, config, rows):
        raise ConnectionError("tracker unreachable")


def test_a_sink_that_cannot_start_is_turned_off_and_the_run_completes(tmp_path, monkeypatch):
    monkeypatch.setitem(loggers.SINKS, "unreachable", _Unreachable)
    said: list[str] = []
    s = rundir.run(tiny_cfg("ste", epochs=1, sets=['loggers=["unreachable"]']), tmp_path,
                   echo=said.append)
    assert s.status == "completed" and s.epochs_completed == 1
    warnings = [m for m in said if m.startswith("warning: logger _Unreachable failed")]
    assert len(warnings) == 1 and "tracker unreachable" in warnings[0], said


# --------------------------------------------------------------------------- missing packages

def _one_line_error(argv: list[str], env: dict[str, str]) -> str:
    p = subprocess.run([sys.executable, "-m", "harness", *argv], cwd=ROOT, capture_output=True,
                       text=True, env=env)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [s for s in p.stderr.splitlines() if s.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


SPEC = """
[study]
name = "sinks"
[recipe]
model = { name = "small_cnn", width = 0.25 }
data = { name = "digits" }
loggers = ["mlflow"]
[grid]
bits = [[1, 32]]
epochs = [1]
seeds = [0]
[variants.ste]
method = "ste"
"""


def test_a_missing_package_or_setting_is_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(loggers.WandB, "package", "wandb_is_not_installed")
    with pytest.raises(UserError) as e:
        rundir.run(tiny_cfg("fp", sets=['loggers=["wandb"]']), tmp_path / "a")
    msg = str(e.value)
    assert msg.startswith("loggers:") and "'wandb' needs the wandb_is_not_installed" in msg, msg
    assert "pip install -e '.[wandb]'" in msg and "\n" not in msg, msg
    assert not (tmp_path / "a" / "metrics.csv").exists()
    # MLflow without a tracking URI: `run` and `sweep --dry-run` say so in one line
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    line = _one_line_error(["run", "--set", 'loggers=["mlflow"]', "--out",
                            str(tmp_path / "b")], env)
    assert line.startswith("error: loggers:") and "export MLFLOW_TRACKING_URI=" in line, line
    assert not (tmp_path / "b" / "metrics.csv").exists()
    spec = tmp_path / "sinks.toml"
    spec.write_text(SPEC)
    p = subprocess.run([sys.executable, "-m", "harness", "sweep", str(spec), "--dry-run",
                        "--results", str(tmp_path / "res")], cwd=ROOT, capture_output=True,
                       text=True, env=env)
    assert p.returncode == 2 and "recipe.loggers: 'mlflow' needs a tracking server" in p.stderr, \
        p.stderr
