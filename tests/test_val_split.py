"""The validation split (data.val_split): stratified, fixed by its own seed, identical across
the runs of a study, disjoint from the training images; evaluated every epoch; required by
the record validator; and new keys that leave every earlier run id unchanged."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import ROOT, tiny_cfg
from harness import config, records
from harness.errors import UserError
from harness.run import resolve, rundir
from harness.study.spec import load_spec
from harness.tasks.classify import data as classify_data
from harness.tasks.classify import loader, split


def dcfg(**kw) -> config.DataConfig:
    return config.DataConfig(name="digits", **kw)


def test_the_split_is_stratified_fixed_by_its_own_seed_and_disjoint_from_training():
    pool = classify_data.load_arrays(dcfg(subset_train=500))
    a = classify_data.load_arrays(dcfg(subset_train=500, val_split=0.2))
    assert len(a.y_val) == 100 and len(a.y_train) == 400
    assert np.bincount(a.y_val, minlength=10).tolist() == [10] * 10    # 50 a class: 20%
    train_idx, val_idx = a.indices[0], a.val_indices
    assert not set(train_idx) & set(val_idx)                           # disjoint
    assert sorted(np.concatenate([train_idx, val_idx])) == sorted(pool.indices[0])
    at = {int(i): k for k, i in enumerate(pool.indices[0])}           # the pool's pixels
    assert np.array_equal(a.x_val, pool.x_train[[at[int(i)] for i in val_idx]])
    torch.manual_seed(5)
    np.random.seed(5)                                                  # no global RNG in it
    b = classify_data.load_arrays(dcfg(subset_train=500, val_split=0.2))
    assert np.array_equal(a.val_indices, b.val_indices) and np.array_equal(a.x_val, b.x_val)
    c = classify_data.load_arrays(dcfg(subset_train=500, val_split=0.2, val_seed=1))
    assert not np.array_equal(a.val_indices, c.val_indices)           # its own seed decides
    assert a.x_test.shape == pool.x_test.shape                         # the test set untouched


def test_count_fraction_and_mistakes():
    assert split.val_count(50, 300) == 50 and split.val_count(0.1, 300) == 30
    assert split.val_count(0.001, 300) == 1
    assert len(classify_data.load_arrays(dcfg(subset_train=300, val_split=50)).y_val) == 50
    with pytest.raises(UserError, match="data.val_split.*whole number"):
        tiny_cfg(sets=["data.val_split=12.5"])
    with pytest.raises(UserError, match="data.val_split: holds out 295 of 300"):
        classify_data.load_arrays(dcfg(subset_train=300, val_split=295))
    with pytest.raises(UserError, match="data.val_split"):
        tiny_cfg(sets=["data.val_split=-1"])


def test_super_resolution_refuses_a_validation_split(tmp_path):
    with pytest.raises(UserError) as e:
        resolve.build(flags={"task": "sr", "model.name": "srresnet", "data.name": "hr_folder",
                             "data.root": str(tmp_path), "data.val_split": 0.1})
    assert e.value.field == "data.val_split" and "drop data.val_split" in str(e.value)


def test_runs_hold_out_the_same_images_and_log_validation_every_epoch(tmp_path):
    """Two runs of a study (other method, other seed) record the same split fingerprint; the
    metrics have val_loss and val_acc each epoch; the last val_acc is the deployed network's
    accuracy on exactly the held-out images."""
    sets = ["data.val_split=60"]
    a = rundir.run(tiny_cfg("fp", sets=sets), tmp_path / "a", echo=lambda s: None)
    b = rundir.run(tiny_cfg("ste", sets=sets, seed=3), tmp_path / "b", echo=lambda s: None)
    fa, fb = a.data_fingerprint, b.data_fingerprint
    assert fa["val"] == fb["val"] and fa["val"]["n_val"] == 60 and fa["n_train"] == 240
    assert fa["subset"] == fb["subset"] and fa["content"] == fb["content"]
    df = pd.read_csv(tmp_path / "b" / "metrics.csv")
    assert {"val_loss", "val_acc"} <= set(df.columns) and len(df) == 2
    assert df["val_acc"].between(0, 100).all() and (df["val_loss"] > 0).all()
    acc = df["val_acc"].iloc[-1] * 60 / 100
    assert abs(acc - round(acc)) < 1e-9                    # a count out of the 60 images
    assert records.load_run(tmp_path / "b").status == "completed"


def test_the_validator_requires_the_validation_columns_of_a_split(tmp_path):
    rundir.run(tiny_cfg("fp", sets=["data.val_split=0.2"]), tmp_path / "r", echo=lambda s: None)
    path = tmp_path / "r" / "metrics.csv"
    path.write_text(pd.read_csv(path).drop(columns=["val_acc"]).to_csv(index=False))
    rec = records.load_run(tmp_path / "r")
    assert rec.status == "corrupt" and "val_acc" in rec.problem


def test_streamed_folders_hold_out_validation_images_of_the_training_folder(tmp_path):
    rng = np.random.default_rng(0)
    for part, n in (("train", 6), ("val", 2)):
        for c in ("a", "b"):
            (tmp_path / part / c).mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
                Image.fromarray(arr).save(tmp_path / part / c / f"{i}.png")
    d = loader.load(config.DataConfig(name="imagefolder", root=str(tmp_path), workers=0,
                                             val_split=4), torch.device("cpu"))
    assert d.streamed and d.num_train == 8 and d.num_val == 4 and d.num_test == 4
    assert not set(d.train_idx) & set(d.val_idx)
    (x, y), = list(d.val_batches(8))
    assert x.shape == (4, 3, 224, 224) and sorted(y.tolist()) == [0, 0, 1, 1]
    assert d.fingerprint["val"]["n_val"] == 4


# run ids of `make demo` computed by the code before these keys existed (results/demo of the
# main branch at 2dba90f): the new keys at their defaults must leave them as they were
DEMO_IDS = ("fp_w32a32_e4_s0_d419a3cd", "slb-recal-end_w2a32_e4_s0_33d6835a",
            "bop_w1a32_e4_s1_6b190afe", "lsq_w2a32_e8_s2_8e6fd584")


def test_new_keys_leave_earlier_run_ids_unchanged():
    study = load_spec(ROOT / "studies" / "demo.toml")
    ids = {r.run_id for r in study.runs}
    assert len(ids) == 78 and set(DEMO_IDS) <= ids
    assert not study.slots and all(r.stage == "final" for r in study.runs)
