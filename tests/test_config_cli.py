"""Config parsing and every user mistake: exit code 2, one line naming the field, no traceback."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, tiny_cfg
from harness import config, files
from harness.cli import main
from harness.run import resolve


def test_set_values_are_typed_and_method_options_validated():
    cfg = resolve.build(flags={"method": "ste"}, sets=["model.width=0.5", "optim.milestones=[3, 6]",
                                                 "method.scaling=channel", "method.clip=false",
                                                 "data.augment=true", "optim.name=adam"])
    assert cfg.model.width == 0.5 and cfg.optim.milestones == (3.0, 6.0)
    assert config.options_dict(cfg.method_options) == {"scaling": "channel", "clip": False,
                                                        "latent_clip": True}
    assert cfg.data.augment is True and cfg.optim.name == "adam"
    assert cfg.w_bits == 1  # the method's default


def test_dataset_default_augmentation_is_resolved():
    assert resolve.build(flags={"data.name": "digits"}).data.augment is False


def test_config_round_trips_through_json_and_hash_ignores_paths_and_device(tmp_path):
    cfg = tiny_cfg("dorefa", w_bits=2)
    again = resolve.from_dict((json.loads(json.dumps(config.to_dict(cfg)))))
    assert again == cfg and resolve.config_hash(again) == resolve.config_hash(cfg)
    moved = resolve.build(flags={**config.flatten(config.to_dict(cfg)), "device": "cpu",
                                 "data.root": "/x"})
    assert resolve.config_hash(moved) == resolve.config_hash(cfg)
    assert resolve.config_hash(tiny_cfg("dorefa", w_bits=2, seed=1)) != resolve.config_hash(cfg)


def test_toml_config_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('epochs = 3\n[method]\nname = "ste"\nscaling = "layer"\n[model]\nwidth = 0.5\n')
    cfg = resolve.build(f)
    assert (cfg.method, cfg.method_options.scaling, cfg.epochs, cfg.model.width) == \
        ("ste", "layer", 3, 0.5)


BAD = [  # (extra CLI args, field named in the message)
    (["--method", "nope"], "method"),
    (["--method", "ste", "--w-bits", "2"], "w_bits"),
    (["--epochs", "0"], "epochs"),
    (["--model", "resnet99"], "model.name"),
    (["--dataset", "svhn"], "data.name"),
    (["--dataset", "cifar10"], "data.root"),
    (["--dataset", "cifar10", "--data-root", "/nonexistent"], "data.root"),
    (["--dataset", "imagefolder", "--data-root", str(ROOT)], "data.root"),
    (["--dataset", "mnist", "--data-root", str(ROOT)], "data.root"),
    (["--set", "optim.lrr=0.1"], "optim.lrr"),
    (["--set", "frobnicate=1"], "frobnicate"),
    (["--set", "method.scaling=channel"], "method.scaling"),          # fp has no options
    (["--method", "ste", "--set", "method.scaling=row"], "method.scaling"),
    (["--set", "model.width=wide"], "model.width"),
    (["--set", "a_bits=3x"], "a_bits"),
    (["--set", "optim.name=rmsprop"], "optim.name"),
    (["--set", "nokey"], "--set"),
    (["--config", "/nonexistent.toml"], "--config"),
]


@pytest.mark.parametrize("args,field", BAD)
def test_bad_input_is_one_line_exit_2(args, field, tmp_path, capsys):
    rc = main(["run", "--out", str(tmp_path / "r"), "--set", "progress=none", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert field in err
    assert not (tmp_path / "r" / "summary.json").exists()


def test_argparse_errors_exit_2_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--epochs", "two", "--out", "x"])
    assert e.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", "--out", str(blocker / "sub"), "--set", "progress=none"]) == 2
    assert "--out" in capsys.readouterr().err


def test_run_dir_with_a_different_config_is_refused(tmp_path, capsys):
    out = str(tmp_path / "r")
    common = ["run", "--out", out, "--set", "progress=none", "--set", "data.subset_train=100",
              "--set", "model.width=0.25", "--epochs", "1"]
    assert main(common) == 0
    before = (tmp_path / "r" / "metrics.csv").read_text()
    assert main(common[:-1] + ["2"]) == 2
    assert "different config" in capsys.readouterr().err
    assert (tmp_path / "r" / "metrics.csv").read_text() == before  # never overwritten
    assert main(common) == 0                                          # same config: no-op
    assert "already completed" in capsys.readouterr().out


def test_real_process_prints_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "harness", "run", "--method", "ste", "--w-bits", "4",
                        "--out", str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [p.stderr.strip()]
    assert "Traceback" not in p.stderr and "w_bits" in p.stderr


def test_malformed_data_is_a_one_line_user_error(tmp_path, capsys):
    cifar = tmp_path / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (cifar / name).write_bytes(b"")                      # truncated files
    folder = tmp_path / "folder"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (folder / split / c).mkdir(parents=True)
            (folder / split / c / "0.jpg").write_text("not an image")
    for args in (["--dataset", "cifar10", "--data-root", str(tmp_path / "cifar")],
                 ["--dataset", "imagefolder", "--data-root", str(folder)]):
        rc = main(["run", "--out", str(tmp_path / "r" / args[1]), "--set", "progress=none", *args])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "data.root" in err, err
        summary = files.read_json(tmp_path / "r" / args[1] / "summary.json")
        assert summary["status"] == "failed" and "data.root" in summary["error"]
