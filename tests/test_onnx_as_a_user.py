"""deployed.onnx used as a user would: onnxruntime alone, raw images read from disk with PIL,
the class names from the file's own metadata; it must give the harness's accuracy.

(Before the input contract the graph expected images normalised with the training set's
mean and std, which nothing in the export recorded: raw images gave chance accuracy.)
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image

from conftest import ROOT, tiny_cfg
from harness import records
from harness.run import rundir


def _digits_folder(root: Path) -> Path:
    """scikit-learn's digits as an image folder of 8-bit PNGs (train/ and test/, a folder per
    class), the way a user's own data arrives."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    for i, (im, label) in enumerate(zip(images, d.target)):
        split = "test" if i % 4 == 0 else "train"
        folder = root / split / f"digit{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im, mode="L").save(folder / f"{i}.png")
    return root


def _cifar_folder(src: Path, root: Path, train: int = 40, test: int = 20) -> Path:
    """A small image folder linking the first JPEGs of each class of the CIFAR-10 copy."""
    for split, n in (("train", train), ("test", test)):
        for cls in sorted(p.name for p in (src / split).iterdir() if p.is_dir()):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for f in sorted((src / split / cls).iterdir())[:n]:
                (folder / f.name).symlink_to(f)
    return root


def _train_and_export(data_root: Path, run_dir: Path) -> tuple[float, str]:
    cfg = tiny_cfg("slb", w_bits=1, epochs=4, **{"data.name": "imagefolder", "data.augment": False,
                                                 "data.root": str(data_root),
                                                 "data.subset_train": 0, "data.subset_test": 0})
    assert rundir.run(cfg, run_dir, echo=lambda s: None).status == "completed"
    p = subprocess.run([sys.executable, "-m", "harness", "export", str(run_dir),
                        "--format", "onnx"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return records.read_summary(run_dir).final_test_acc, p.stdout


def _accuracy_as_a_user(onnx_file: Path, test_dir: Path) -> tuple[float, dict[str, str]]:
    """What the README tells a user to do: nothing from the harness, only onnxruntime,
    PIL and numpy."""
    sess = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    classes = json.loads(meta["classes"])
    files = sorted(f for f in test_dir.rglob("*") if f.is_file())
    images = np.stack([np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1)
                       for f in files])
    logits = sess.run(["logits"], {"image": images})[0]
    predicted = [classes[i] for i in logits.argmax(1)]
    right = sum(p == f.parent.name for p, f in zip(predicted, files))
    return 100.0 * right / len(files), meta


def test_raw_digit_pngs_give_the_harness_accuracy(tmp_path):
    data = _digits_folder(tmp_path / "digits")
    acc, out = _train_and_export(data, tmp_path / "run")
    got, meta = _accuracy_as_a_user(tmp_path / "run" / "deployed.onnx", data / "test")
    assert got == acc and acc > 50, (got, acc)
    assert (meta["dtype"], meta["layout"], json.loads(meta["range"])) == ("uint8", "NCHW",
                                                                          [0, 255])
    assert json.loads(meta["shape"]) == ["N", 3, 8, 8] and meta["preprocess"] == "none"
    assert json.loads(meta["classes"]) == [f"digit{i}" for i in range(10)]
    assert (json.loads(meta["w_bits"]), json.loads(meta["a_bits"])) == (1, 32)
    # the training set's statistics (of the pixels in [0, 1]; every channel alike here)
    train = np.stack([np.asarray(Image.open(f)) for f in (data / "train").rglob("*.png")])
    pixels = train.astype(np.float64) / 255.0
    assert json.loads(meta["mean"]) == [float(np.float32(pixels.mean()))] * 3
    assert json.loads(meta["std"]) == [float(np.float32(pixels.std(ddof=1)))] * 3
    assert "input contract: uint8 images [N, 3, 8, 8] (NCHW" in out and "(x / 255 - mean)" in out
    assert "classes in order: digit0, digit1" in out


def test_raw_cifar10_jpegs_give_the_harness_accuracy(tmp_path, cifar_jpeg):
    data = _cifar_folder(cifar_jpeg, tmp_path / "cifar")
    acc, _ = _train_and_export(data, tmp_path / "run")
    got, meta = _accuracy_as_a_user(tmp_path / "run" / "deployed.onnx", data / "test")
    assert got == acc, (got, acc)
    mean = json.loads(meta["mean"])
    assert len(mean) == 3 and len(set(mean)) == 3  # colour: three different channel means
    assert json.loads(meta["classes"]) == sorted(p.name for p in (cifar_jpeg / "test").iterdir()
                                                 if p.is_dir())


def test_packed_file_and_deployed_pt_carry_the_contract(tmp_path):
    import torch

    from harness.deploy import packing

    run_dir = tmp_path / "run"
    assert rundir.run(tiny_cfg("ste", w_bits=1), run_dir, echo=lambda s: None).status \
        == "completed"
    p = subprocess.run([sys.executable, "-m", "harness", "export", str(run_dir)], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    blob = torch.load(run_dir / "deployed.pt", weights_only=True)
    packed = packing.read_packed(run_dir / packing.FILENAME)
    assert blob["input"] == packed["input"]
    c = blob["input"]
    assert c["shape"] == ["N", 1, 8, 8] and c["classes"] == [str(i) for i in range(10)]
    # every quantized layer at the run's weight width (the first and last layers stay float)
    assert c["w_bits"] == 1 and c["a_bits"] == 32 and len(blob["layers"]) == 3
    assert c["layer_bits"] == {name: 1 for name in blob["layers"]}
