"""The researcher's day: progress lines, resume without recalling the command, a mismatch
that names its keys, `config` and `show`, help on every option, one-pass spec validation,
TensorBoard logs equal to metrics.csv (also across a kill and resume), AdamW, the executor
chosen automatically."""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import ROOT, run_interrupted, tiny_cfg
from harness import cli, config
from harness.cli import main
from harness.run import resolve, rundir, trainer
from harness.study import status, sweep
from harness.study.backends import slurm as slurm_backend
from harness.tasks.sr import SrOptions
from harness.tools import describe

RUN = ["run", "--method", "ste", "--epochs", "3", "--set", "data.subset_train=200",
       "--set", "data.subset_test=100", "--set", "model.width=0.25", "--batch-size", "50"]


def test_run_prints_a_start_line_epoch_lines_and_where_it_resumed(tmp_path, capsys,
                                                                  monkeypatch):
    out = tmp_path / "r"
    cfg = resolve.build(flags={"method": "ste", "epochs": 3, "data.subset_train": 200,
                         "data.subset_test": 100, "model.width": 0.25, "batch_size": 50,
                         "progress": "line"})
    run_interrupted(cfg, out, 2, monkeypatch, echo=print)
    said = capsys.readouterr().out
    assert re.search(r"start ste W1/A32 small_cnn on digits \(200 train images, 4 steps per "
                     r"epoch\), [\d,]+ parameters, device cpu", said), said
    assert "epoch 1/3" in said and "epoch 2/3" in said and "epoch 3/3" not in said
    assert main(["run", "--resume", str(out), "--set", "progress=line"]) == 0
    said = capsys.readouterr().out
    assert "resumed at epoch 2 of 3" in said and "epoch 3/3" in said and "completed" in said


def test_a_config_mismatch_names_the_keys_and_resume_needs_no_command(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(RUN + ["--lr", "0.05", "--out", str(out), "--set", "progress=none"]) == 0
    capsys.readouterr()
    assert main(RUN + ["--lr", "0.1", "--epochs", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "epochs = 3 there, 4 here" in err and "optim.lr = 0.05 there, 0.1 here" in err
    assert f"--resume {out}" in err and len(err.strip().splitlines()) == 1
    # --resume takes the run's own config; keys outside the run id may change
    assert main(["run", "--resume", str(out), "--set", "device=cpu"]) == 0
    assert "already completed" in capsys.readouterr().out
    assert main(["run", "--resume", str(out), "--set", "optim.lr=0.2"]) == 2
    assert "optim.lr = 0.05 there, 0.2 here" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_config_lists_every_key_of_the_dataclasses(capsys):
    keys = {r["key"]: r for r in describe.config_keys()}
    with_sr = config.RunConfig(task="sr", task_options=SrOptions())  # with the task's keys
    flat = config.flatten(config.to_dict(with_sr))
    flat["task"] = "classify"
    flat.pop("method.name")
    assert set(keys) == set(flat) | {"method"}
    for key, row in keys.items():
        want = flat.get(key, "fp")
        assert describe._norm(row["default"]) == describe._norm(want), key
        assert row["help"], f"{key} has no help"
    assert keys["optim.name"]["allowed"] == "sgd | adam | adamw"
    assert keys["seed"]["allowed"] == "[0, 4294967296)"
    assert main(["config"]) == 0
    text = capsys.readouterr().out
    for key in keys:
        assert key in text
    assert main(["config", "--method", "slb"]) == 0
    text = capsys.readouterr().out
    from methods.slb import SlbOptions
    for f in dataclasses.fields(SlbOptions):
        assert f"method.{f.name}" in text
    assert "weight bits [1, 2, 3, 4, 5, 6, 7, 8]" in text


def test_every_method_option_has_help_and_config_shows_it(capsys):
    from methods.base import load_all

    for name, cls in sorted(load_all().items()):
        for f in dataclasses.fields(cls.Options):
            assert f.metadata.get("help"), f"method {name}: option {f.name} has no help"
        assert main(["config", "--method", name]) == 0
        text = capsys.readouterr().out
        for f in dataclasses.fields(cls.Options):
            lines = text.splitlines()
            at = next(i for i, ln in enumerate(lines) if ln.startswith(f"method.{f.name} = "))
            block = [lines[at]] + list(itertools.takewhile(lambda ln: ln.startswith(" "),
                                                           lines[at + 1:]))
            line = " ".join(" ".join(block).split())  # the key's lines: default, type, help
            assert " ".join(f.metadata["help"].split()[:3]) in line, line


def test_show_prints_state_code_changed_config_and_epoch_table(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(RUN + ["--out", str(out), "--set", "progress=none"]) == 0
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{out}: completed" in text and "epochs 3/3" in text and "code " in text
    # compact: only the keys off their defaults, as this run resolves them (the method's
    # weight bits and options, the dataset's augmentation are not changes)
    assert "\n    method = 'ste'\n" in text and "\n    epochs = 3\n" in text
    for default in ("seed = ", "w_bits = ", "data.augment = ", "method.latent_clip = "):
        assert default not in text, default
    lines = text.splitlines()
    head = lines.index("  epochs:") + 1
    assert lines[head].split() == ["epoch", "train_loss", "test_loss", "test_acc", "lr",
                                   "epoch_time_s"]
    assert [ln.split()[0] for ln in lines[head + 1:head + 4]] == ["1", "2", "3"]
    assert main(["show", str(out), "--all"]) == 0
    text = capsys.readouterr().out
    assert "* method = 'ste'" in text and "* epochs = 3" in text and "  seed = 0" in text
    assert "    w_bits = 1" in text and "    data.augment = False" in text
    assert "    method.latent_clip = True" in text and " train_acc " in text
    other = tmp_path / "o"
    assert main(RUN + ["--out", str(other), "--epochs", "1", "--set", "progress=none",
                       "--set", "method.latent_clip=false"]) == 0
    capsys.readouterr()
    assert main(["show", str(other)]) == 0
    assert "\n    method.latent_clip = False\n" in capsys.readouterr().out


def _actions(parser: argparse.ArgumentParser, path: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_of_every_subcommand_has_help():
    parser = cli.build_parser(help_wanted=True)
    seen = set()
    for path, action in _actions(parser):
        assert action.help and action.help != argparse.SUPPRESS, (path, action.dest)
        seen.add(path.strip())
    assert seen >= set(cli.COMMANDS)
    text = parser._subparsers._group_actions[0].choices["run"].format_help()
    assert "slb" in text and "resnet20" in text and "imagefolder" in text  # registries
    sweep_help = parser._subparsers._group_actions[0].choices["sweep"].format_help()
    assert "(default: auto)" in sweep_help
    # run's flags show the config's real defaults, read from the dataclasses
    defaults = {k["key"]: k["default"] for k in describe.config_keys()}
    flat = " ".join(text[text.index("options:"):].split())
    for flag, key in (("--epochs EPOCHS", "epochs"), ("--lr OPTIM.LR", "optim.lr"),
                      ("--method METHOD", "method")):
        part = flat[flat.index(flag):]
        assert f"(default: {defaults[key]})" in part[:part.index(" --", 3)], flag
    fmt = cli._DefaultsFormatter("x")  # no "(default: None)", never two defaults
    for path, action in _actions(parser):
        shown = fmt._get_help_string(action) % {"default": action.default}
        assert "(default: None)" not in shown and shown.count("default") <= 1, (path, shown)


def test_an_unknown_flag_names_the_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--nope"])
    assert e.value.code == 2
    assert "see `python -m harness run --help`" in capsys.readouterr().err


CLEAN = """
[study]
name = "clean"
[recipe]
model = { name = "small_cnn", width = 0.25 }
data = { name = "digits", subset_train = 200 }
optim = { lr = 0.05 }
batch_size = 50
[grid]
bits = [[1, 32]]
epochs = [1]
seeds = [0, 1]
"""

# fourteen mistakes of many kinds
MIXED = """
[study]
name = "mixed"
descripton = "a typo"
[recipe]
model = { name = "resnet2", block = "convprelubn", shortcut = "A" }
data = { name = "digitz", subset_train = 200 }
optim = { lr = -1, momentm = 0.9 }
batch_size = 0
[grid]
bits = [[1, 32]]
epochs = [0, 1]
seeds = [0, 1]
seedz = [3]
[variants.a]
method = "slb"
options = { t0 = "abc", bnn = "sbn" }
cell_options = { "W1/A32" = { factr = 1.04 } }
[variants.b]
method = "dorefa"
[variants.d]
method = "lsqq"
[executor]
cpus_per_task = 0
[report]
ourz = "slb"
"""
# each problem's field (as the line names it) and a part of the fix
MIXED_PROBLEMS = {
    "study.descripton": "unknown key; did you mean 'description'?",
    "recipe.optim.lr": "must be > 0, got -1",
    "recipe.optim.momentm": "unknown config key; did you mean 'optim.momentum'?",
    "recipe.batch_size": "must be >= 1, got 0",
    "recipe.model.name": "unknown model 'resnet2'; did you mean 'resnet20'?",
    "recipe.data.name": "unknown dataset 'digitz'; did you mean 'digits'?",
    "grid.seedz": "unknown key; did you mean 'seeds'?",
    "grid.epochs": "budgets must be >= 1 epoch, got [0, 1]",
    "variants.a: method.t0": "expected a number, got 'abc'",
    "variants.a: method.bnn": "unknown option (did you mean 'bn'?)",
    'variants.a.cell_options."W1/A32": method.factr': "unknown option (did you mean 'factor'?)",
    "variants.d: method": "unknown method 'lsqq'; did you mean 'lsq'?",
    "executor.cpus_per_task": "expected an integer >= 1, got 0",
    "report.ourz": "unknown key; did you mean 'ours'?",
}


def test_every_mistake_of_a_spec_is_reported_once_in_one_pass(tmp_path, capsys):
    p = tmp_path / "mixed.toml"
    p.write_text(MIXED)
    assert main(["sweep", str(p), "--dry-run", "--results", str(tmp_path / "res")]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert lines[-1] == f"error: {len(MIXED_PROBLEMS)} problem(s) in {p}; nothing was submitted"
    problems = [line.removeprefix(f"error: {p}: ") for line in lines[:-1]]
    assert len(problems) == len(MIXED_PROBLEMS) == 14, problems
    for field, fix in MIXED_PROBLEMS.items():
        named = [line for line in problems if line.startswith(field + ": ")]
        assert len(named) == 1 and fix in named[0], (field, problems)
    # model.block and .shortcut are not checked against the misspelled model's name
    assert not any("block" in line or "shortcut" in line for line in problems), problems
    assert out == "" and not (tmp_path / "res").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_study_is_a_clean_spec(path):
    warnings: list[str] = []   # as for --dry-run: data not here is a warning, not an error
    study = sweep.load_spec(path, data_warnings=warnings)
    assert study.runs and all(w.startswith(f"{path}: recipe.data.root") for w in warnings)


def _fixed(extra: str = "") -> str:
    """A clean spec: one dorefa variant."""
    return CLEAN + '[variants.c]\nmethod = "dorefa"\n' + extra


def test_executor_auto_picks_slurm_only_when_a_controller_answers(tmp_path, monkeypatch,
                                                                  capsys):
    p = tmp_path / "s.toml"
    p.write_text(_fixed())
    for answers, chosen in ((False, "local"), (True, "slurm")):
        monkeypatch.setattr(slurm_backend, "slurm_answers", lambda: answers)
        assert main(["sweep", str(p), "--dry-run", "--results", str(tmp_path / "res")]) == 0
        assert f"executor: {chosen} (auto:" in capsys.readouterr().out


def _scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), purge_orphaned_data=True)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _same_as_metrics(run_dir: Path) -> None:
    m = pd.read_csv(run_dir / "metrics.csv")
    tb = _scalars(run_dir / "tensorboard")
    assert set(tb) == set(m.columns) - {"epoch"}
    for col in tb:
        assert [s for s, _ in tb[col]] == m["epoch"].tolist(), col      # each epoch once
        assert [v for _, v in tb[col]] == pytest.approx(m[col].tolist(), rel=1e-6), col


def test_tensorboard_logs_equal_metrics_also_after_a_kill_and_resume(tmp_path, monkeypatch):
    cfg = tiny_cfg("slb", epochs=4, sets=['loggers=["tensorboard"]'])
    whole = tmp_path / "whole"
    rundir.run(cfg, whole, echo=lambda s: None)
    _same_as_metrics(whole)
    cut = tmp_path / "cut"
    run_interrupted(cfg, cut, 2, monkeypatch)
    rundir.run(cfg, cut, echo=lambda s: None)
    _same_as_metrics(cut)
    assert len(list((cut / "tensorboard").glob("events.*"))) >= 2   # the log went on
    # loggers is not part of the run id: turning TensorBoard on does not make a new run
    assert resolve.config_hash(cfg) == resolve.config_hash(tiny_cfg("slb", epochs=4))


def test_adamw_and_a_learning_rate_scale_for_quantizer_parameters(tmp_path):
    cfg = tiny_cfg("lsq", w_bits=2, epochs=1, sets=["optim.name=adamw",
                                                      "optim.quant_lr_scale=0.1"])
    t = trainer.Trainer(cfg, tmp_path)
    t.build()
    assert isinstance(t.optimizer, torch.optim.AdamW)
    lrs = {g["kind"]: g["lr"] for g in t.optimizer.param_groups}
    assert lrs["quant"] == pytest.approx(0.1 * lrs["weight"]) and lrs["weight"] == cfg.optim.lr
    assert rundir.run(cfg, tmp_path / "r", echo=lambda s: None).status == "completed"
    # the new key, left at its default, keeps old run ids
    assert "optim.quant_lr_scale" not in config.cell_key(tiny_cfg("lsq", w_bits=2))


def test_local_sweep_progress_lines(tmp_path):
    spec = tmp_path / "p.toml"
    spec.write_text(_fixed("[executor]\nlocal_concurrency = 2\ncpus_per_task = 1\n"))
    p = subprocess.run([sys.executable, "-m", "harness", "sweep", str(spec), "--executor",
                        "local", "--results", str(tmp_path / "res")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    starts = [ln for ln in p.stdout.splitlines() if ln.startswith("[start")]
    assert len(starts) == 2  # a line when each run starts
    for k, line in enumerate(starts, 1):
        assert re.fullmatch(rf"\[start {k}/2\] c_w1a32_e1_s\d_\w{{8}}; elapsed \S+, "
                            r"ETA (\S+|after the first epoch)", line), line
    lines = [ln for ln in p.stdout.splitlines() if re.match(r"\[\d", ln)]
    assert len(lines) == 2
    for k, line in enumerate(lines, 1):
        assert re.fullmatch(rf"\[{k}/2\] c_w1a32_e1_s\d_\w{{8}}: completed \d+\.\d\d% in "
                            r"\d+\.\ds; elapsed \S+, ETA \S+", line), line
    shown = subprocess.run([sys.executable, "-m", "harness", "status",
                            str(tmp_path / "res" / "clean")], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert "2/2 runs done: completed 2" in shown.stdout
    assert status.status_counts(tmp_path / "res" / "clean")[0]["completed"] == 2


def test_the_bar_runs_over_each_epochs_steps_and_keeps_its_line(tmp_path, capsys):
    cfg = tiny_cfg("ste", epochs=2, sets=["progress=bar"])
    rundir.run(cfg, tmp_path / "r", echo=print)
    out, err = capsys.readouterr()
    steps = trainer.Trainer(cfg, tmp_path / "x")
    steps.build()
    for e in (1, 2):   # a bar over the steps of each epoch, on stderr
        bar = rf"epoch {e}/2: +\d+%\|.*\| \d/{steps.steps_per_epoch} \["
        assert re.search(bar, err), err[-400:]
    epoch_lines = [ln for ln in out.splitlines() if re.match(r"epoch [12]/2\b", ln)]
    assert len(epoch_lines) == 2, out   # one line per finished epoch stays in the history


class _Broken:
    def start(self, run_dir, config, rows):
        pass

    def log(self, row):
        raise OSError("disk of the tracker is gone")

    def close(self):
        pass


def test_a_failing_logger_never_fails_the_run(tmp_path, monkeypatch):
    from harness.run import loggers

    monkeypatch.setitem(loggers.SINKS, "broken", _Broken)
    said = []
    s = rundir.run(tiny_cfg("ste", epochs=2, sets=['loggers=["broken"]']), tmp_path,
                  echo=said.append)
    assert s.status == "completed"
    warnings = [m for m in said if m.startswith("warning: logger _Broken failed")]
    assert len(warnings) == 1 and "metrics.csv is complete" in warnings[0]
