"""The finished two-run study the hostile tests start from (tests/test_hostile.py,
tests/test_hostile_more.py): each test gets a fresh copy."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.cli import main

SPEC = """
[study]
name = "hostile"
[recipe]
model = { name = "small_cnn", width = 0.25 }
data = { name = "digits", subset_train = 120, subset_test = 60 }
optim = { lr = 0.05 }
batch_size = 40
[grid]
bits = [[1, 32]]
epochs = [1]
seeds = [0, 1]
[variants.ste]
method = "ste"
[report]
ours = "ste"
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A finished 2-run study (checkpoints included), copied fresh for each test."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "hostile.toml").write_text(SPEC)
    assert main(["sweep", str(root / "hostile.toml"), "--executor", "debug", "--results",
                 str(root / "res")]) == 0
    return root / "res" / "hostile"


@pytest.fixture
def sdir(study, tmp_path) -> Path:
    copy = tmp_path / "hostile"
    shutil.copytree(study, copy, symlinks=True)
    (tmp_path / "hostile.toml").write_text(SPEC)
    return copy


def study_runs(sdir: Path) -> list[Path]:
    return sorted((sdir / "runs").iterdir())


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err
