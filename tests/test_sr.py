"""The super-resolution task: metrics and degradation against hand values and scikit-image,
SR networks and their quantization policy, every method through training, deployment and
export, the records contract (classification records unchanged), and config errors.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CIFAR_JPEG
from harness import config, records
from harness.deploy.export import export_and_check
from harness.run import resolve, rundir, trainer
from harness.tasks import models
from harness.tasks.classify import Classify
from harness.tasks.sr import SuperResolution
from harness.tasks.sr import data as sr_data
from harness.tasks.sr import metrics as sr_metrics
from harness.tasks.sr import models as sr_models
from methods.base import UserError, load_all, quant_layers

METHODS = sorted(load_all())


# --------------------------------------------------------------------------- PSNR and SSIM

def _gray(value: int, h: int = 20, w: int = 24) -> torch.Tensor:
    return torch.full((3, h, w), value, dtype=torch.uint8)


def test_psnr_of_a_one_level_grey_offset_is_hand_computed():
    # R = G = B: Y = 16 + 219 v, so one 8-bit level is 219/255 on Y;
    # PSNR = 10 log10(255^2 / (219/255)^2) = 20 log10(255^2 / 219) = 49.4527 dB
    assert sr_metrics.psnr_y(_gray(101), _gray(100), 0) == pytest.approx(49.4527, abs=1e-4)
    assert math.isinf(sr_metrics.psnr_y(_gray(100), _gray(100), 2))


def test_psnr_crops_the_border():
    a, b = _gray(100), _gray(100).clone()
    b[:, :2, :] = 255  # differences only in the two top rows
    assert math.isinf(sr_metrics.psnr_y(a, b, 2))
    # uncropped: 2 of 20 rows differ by 155 levels -> MSE = (155 * 219 / 255)^2 / 10
    mse = (155 * 219 / 255) ** 2 / 10
    assert sr_metrics.psnr_y(a, b, 0) == pytest.approx(10 * math.log10(255 ** 2 / mse), abs=1e-9)


def test_ssim_of_two_flat_images_is_hand_computed():
    # no variance: SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1), C1 = (0.01 * 255)^2
    ya, yb = 16 + 219 * 100 / 255, 16 + 219 * 140 / 255
    c1 = (0.01 * 255) ** 2
    want = (2 * ya * yb + c1) / (ya ** 2 + yb ** 2 + c1)
    got = sr_metrics.ssim_y(_gray(100, 30, 30), _gray(140, 30, 30), 2)
    assert got == pytest.approx(want, abs=1e-12)
    assert sr_metrics.ssim_y(_gray(100, 30, 30), _gray(100, 30, 30), 0) == pytest.approx(1.0)


@pytest.mark.parametrize("border", [0, 2, 4])
def test_psnr_and_ssim_match_scikit_image_on_the_same_arrays(border):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = np.random.default_rng(border)
    hr = rng.integers(0, 256, (3, 48, 40), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-25, 26, hr.shape), 0, 255).astype(np.uint8)
    ya, yb = (sr_metrics.rgb_to_y(torch.from_numpy(x).double() / 255).numpy() for x in (sr, hr))
    if border:
        ya, yb = ya[border:-border, border:-border], yb[border:-border, border:-border]
    sr_t, hr_t = torch.from_numpy(sr), torch.from_numpy(hr)
    assert sr_metrics.psnr_y(sr_t, hr_t, border) == pytest.approx(
        peak_signal_noise_ratio(yb, ya, data_range=255), abs=1e-9)
    assert sr_metrics.ssim_y(sr_t, hr_t, border) == pytest.approx(
        structural_similarity(yb, ya, data_range=255, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False), abs=1e-9)


def test_y_channel_is_matlab_rgb2ycbcr():
    px = torch.tensor([[[1.0]], [[0.0]], [[0.0]]])  # pure red: 16 + 65.481
    assert float(sr_metrics.rgb_to_y(px)) == pytest.approx(81.481)
    assert float(sr_metrics.rgb_to_y(torch.ones(3, 1, 1))) == pytest.approx(235.0)


# --------------------------------------------------------------------------- degradation

def test_x2_bicubic_kernel_is_matlab_antialiased_cubic():
    # cubic(a=-0.5) widened 2x: taps at 0.5, 1.5, 2.5, 3.5 input pixels from the centre,
    # cubic(d/2)/2 = 0.43359375, 0.11328125, -0.03515625, -0.01171875 (hand-computed)
    m = sr_metrics.resize_matrix(16, 8, 0.5)
    half = [-0.01171875, -0.03515625, 0.11328125, 0.43359375]
    assert m[3, 3:11].tolist() == pytest.approx(half + half[::-1], abs=1e-15)
    assert m.sum(dim=1).tolist() == pytest.approx([1.0] * 8)
    # symmetric border: output 0 reads input pixels -3..4; -1 -> 0, -2 -> 1, -3 -> 2
    assert m[0, :5].tolist() == pytest.approx(
        [0.43359375 + 0.11328125, 0.43359375 - 0.03515625, 0.11328125 - 0.01171875,
         -0.03515625, -0.01171875], abs=1e-15)


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("size", [(4, 4), (5, 7), (37, 50)])
def test_imresize_by_an_integer_factor_equals_the_dense_matrix(factor, size):
    """The strided shrink path (one kernel, mirrored border) against M_h x M_w^T."""
    h, w = (n * factor for n in size)
    x = torch.rand(2, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mh = sr_metrics.resize_matrix(h, size[0], 1 / factor)
    mw = sr_metrics.resize_matrix(w, size[1], 1 / factor)
    assert torch.allclose(sr_metrics.imresize(x, 1 / factor), mh @ x @ mw.t(), atol=1e-13, rtol=0)


@pytest.mark.parametrize("scale", [0.5, 1 / 3, 0.25, 2.0, 3.0])
def test_imresize_equals_pil_bicubic_away_from_the_border(scale):
    rng = np.random.default_rng(0)
    a = rng.random((48, 60)).astype(np.float32)
    size = (math.ceil(60 * scale - 1e-9), math.ceil(48 * scale - 1e-9))
    pil = np.asarray(Image.fromarray(a, mode="F").resize(size, Image.BICUBIC))
    ours = sr_metrics.imresize(torch.from_numpy(a).double(), scale).numpy()
    assert ours.shape == pil.shape
    k = 6 if scale > 1 else 4  # PIL truncates the kernel at the border, MATLAB mirrors
    assert np.abs(pil - ours)[k:-k, k:-k].max() < 1e-5


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_degrade_shapes_range_and_constants(scale):
    rng = np.random.default_rng(scale)
    image = torch.from_numpy(rng.integers(0, 256, (3, 50, 62), dtype=np.uint8))
    hr = sr_metrics.modcrop(image, scale)
    assert hr.shape[-2] % scale == 0 and hr.shape[-1] % scale == 0
    lr = sr_metrics.degrade(hr, scale)
    assert lr.dtype == torch.uint8
    assert lr.shape == (3, hr.shape[-2] // scale, hr.shape[-1] // scale)
    up = sr_metrics.bicubic_upscale(lr, scale)
    assert up.shape == hr.shape and 0 <= float(up.min()) and float(up.max()) <= 1
    flat = _gray(77, 12 * scale, 8 * scale)
    assert torch.equal(sr_metrics.degrade(flat, scale), _gray(77, 12, 8))


# --------------------------------------------------------------------------- tiny data

def _smooth_image(rng, h: int, w: int) -> Image.Image:
    small = rng.integers(0, 256, (max(2, h // 4), max(2, w // 4), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BICUBIC)


@pytest.fixture
def hr_root(tmp_path):
    """An hr_folder data root: 12 training images of 24x24, 2 test images."""
    rng = np.random.default_rng(0)
    root = tmp_path / "hr"
    for folder, n, (h, w) in (("train/sub", 12, (24, 24)), ("test", 2, (20, 28))):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            _smooth_image(rng, h, w).save(root / folder / f"{i:03d}.png")
    return root


def sr_cfg(root, method: str = "fp", model: str = "srresnet", sets=(), **flags):
    base = {"method": method, "task": "sr", "model.name": model, "data.name": "hr_folder",
            "data.root": str(root), "sr.patch_size": 8, "sr.blocks": 1, "model.width": 0.125,
            "epochs": 2, "batch_size": 4, "optim.name": "adam", "optim.lr": 1e-3,
            "progress": "none"}
    base.update(flags)
    return resolve.build(flags=base, sets=list(sets))


def test_sr_data_pairs_patches_and_test_images(hr_root):
    cfg = sr_cfg(hr_root, **{"sr.scale": 2, "sr.repeat": 2})
    data = sr_data.load(cfg, torch.device("cpu"))
    assert data.num_train == 24 and data.num_test == 2 and data.steps_per_epoch(4) == 6
    gen = torch.Generator().manual_seed(0)
    batches = list(data.train_batches(4, gen, augment=False))
    assert len(batches) == 6
    lr, hr = batches[0]
    assert lr.shape == (4, 3, 4, 4) and hr.shape == (4, 3, 8, 8)
    assert 0 <= float(lr.min()) and float(hr.max()) <= 1
    for x, y in zip(lr, hr):  # every LR patch is the degradation of its HR patch, up to
        # the border (the LR image was made from the whole HR image, as EDSR's)
        inner = sr_metrics.degrade(sr_metrics.to_uint8(y), 2).float()[:, 1:-1, 1:-1] / 255
        assert (inner - x[:, 1:-1, 1:-1]).abs().max() <= 3 / 255
    t = data.test_sets[0][1][0]
    assert t.hr.shape == (3, 20, 28) and t.lr.shape == (3, 10, 14)
    assert set(data.bicubic) == {"test"} and 10 < data.bicubic["test"]["psnr"] < 60


def test_standin_test_set_is_the_bundled_photographs():
    imgs = sr_data.standin_images()
    assert [n for n, _ in imgs] == list(sr_data.STANDIN)
    assert all(a.dtype == np.uint8 and a.shape[0] == 3 and min(a.shape[1:]) >= 256
               for _, a in imgs)
    assert "not Set5/Set14" in sr_data.STANDIN_LABEL


# --------------------------------------------------------------------------- networks

@pytest.mark.parametrize("name", ["srresnet", "edsr_baseline"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_sr_networks_upscale_by_their_scale(name, scale):
    net = sr_models.MODELS[name](3, 3, (8, 8), 0.25, torch.nn.ReLU, scale=scale, blocks=2)
    assert net(torch.rand(2, 3, 7, 9)).shape == (2, 3, 7 * scale, 9 * scale)


@pytest.mark.parametrize("name,bn", [("srresnet", True), ("edsr_baseline", False)])
def test_policy_quantizes_the_residual_blocks_only(name, bn, hr_root):
    cfg = sr_cfg(hr_root, "ste", model=name, **{"sr.blocks": 3})
    method = resolve.make_method(cfg)
    net = models.build(cfg, sr_models.MODELS, 3, 3, (4, 4), method)
    q = sorted(n for n, _ in quant_layers(net))
    assert q == sorted(f"blocks.{i}.conv{j}" for i in range(3) for j in (1, 2))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == bn
    both = sr_cfg(hr_root, "ste", model=name, sets=["model.quantize_first=true",
                                                    "model.quantize_last=true"])
    net = models.build(both, sr_models.MODELS, 3, 3, (4, 4), resolve.make_method(both))
    names = {n for n, _ in quant_layers(net)}
    assert any(n.startswith("head") for n in names) and "tail" in names


# --------------------------------------------------------------------------- every method

@pytest.mark.parametrize("name", METHODS)
def test_every_method_trains_deploys_and_exports_an_sr_network(name, hr_root, tmp_path):
    bits = load_all()[name].default_bits
    cfg = sr_cfg(hr_root, name, w_bits=bits)
    run_dir = tmp_path / name
    s = rundir.run(cfg, run_dir, echo=lambda line: None)
    assert s.status == "completed" and s.task == "sr" and s.metric == "test_psnr"
    assert s.final_test_acc is None and math.isfinite(s.final_metric)
    assert s.final_metrics["test_psnr"] == s.final_metric
    assert 10 < s.final_metrics["bicubic_psnr"] < 60
    df = __import__("pandas").read_csv(run_dir / "metrics.csv")
    assert list(df.columns[:8]) == list(SuperResolution.columns) and len(df) == 2
    assert df["test_psnr"].iloc[-1] == s.final_metric
    for f in ("sr_crop.png", "sr_crop_hr.png", "sr_crop_bicubic.png"):
        with Image.open(run_dir / f) as im:
            assert im.size == (20, 20)  # the whole 20x28 image is narrower than the crop
    got, want = export_and_check(run_dir, echo=lambda line: None)
    assert got == want == s.final_metric
    blob = torch.load(run_dir / "deployed.pt", weights_only=True)
    coded = [e for e in blob["layers"].values() if "codes" in e]
    assert len(coded) == (0 if bits == 32 else 2)
    for e in coded:
        assert not e["codes"].is_floating_point() and e["levels"].shape[-1] <= 2 ** bits
    rec = records.load_run(run_dir)
    assert rec.problem == "" and rec.status == "completed"


def test_killed_sr_run_resumes_to_the_same_result(hr_root, tmp_path, monkeypatch):
    from conftest import metrics_without_timing, run_interrupted

    cfg = sr_cfg(hr_root, "slb", epochs=3)
    rundir.run(cfg, tmp_path / "full", echo=lambda line: None)
    run_interrupted(cfg, tmp_path / "cut", stop_before_epoch=1, monkeypatch=monkeypatch)
    assert len(metrics_without_timing(tmp_path / "cut")) == 1
    rundir.run(cfg, tmp_path / "cut", echo=lambda line: None)
    full, cut = (metrics_without_timing(tmp_path / d) for d in ("full", "cut"))
    assert full.equals(cut)
    a, b = (records.read_summary(tmp_path / d) for d in ("full", "cut"))
    assert a.final_metrics == b.final_metrics


def test_slb_state_bn_is_a_no_op_without_bn(hr_root, tmp_path):
    """EDSR-baseline has no BN: SLB with bn=sbn trains exactly the network bn=none trains."""
    runs = {}
    for bn in ("sbn", "none"):
        cfg = sr_cfg(hr_root, "slb", model="edsr_baseline", sets=[f"method.bn={bn}"])
        rundir.run(cfg, tmp_path / bn, echo=lambda line: None)
        runs[bn] = __import__("pandas").read_csv(tmp_path / bn / "metrics.csv").drop(
            columns=records.TIMING_COLUMNS)
    assert runs["sbn"].equals(runs["none"])


def test_slb_keeps_quantized_bn_statistics_in_srresnet(hr_root, tmp_path):
    cfg = sr_cfg(hr_root, "slb", model="srresnet")
    t = trainer.Trainer(cfg, tmp_path)
    t.build()
    t.train_epoch(0)
    from methods.slb import StateBN

    sbn = [m for m in t.model.modules() if isinstance(m, StateBN)]
    assert sbn and any(not torch.equal(m.running_mean, m.running_mean_q) for m in sbn)


@pytest.mark.skipif(not (CIFAR_JPEG / "train").is_dir(), reason="no CIFAR-10 JPEG copy")
def test_standin_dataset_trains_on_cifar_jpeg_patches(tmp_path):
    cfg = sr_cfg(CIFAR_JPEG, "fp", model="edsr_baseline",
                 **{"data.name": "sr_standin", "data.subset_train": 16, "data.subset_test": 1,
                    "sr.patch_size": 32, "epochs": 1})
    s = rundir.run(cfg, tmp_path / "r", echo=lambda line: None)
    assert s.status == "completed" and math.isfinite(s.final_metric)


# --------------------------------------------------------------------------- records, config

def test_classification_records_hold_no_task_keys(tmp_path):
    from conftest import tiny_cfg

    cfg = tiny_cfg("fp")
    assert not {"task", "sr"} & set(config.to_dict(cfg))
    rundir.run(cfg, tmp_path, echo=lambda line: None)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert not {"task", "sr"} & set(saved)
    summ = json.loads((tmp_path / "summary.json").read_text())
    assert not set(records.GENERIC_RESULT_FIELDS) & set(summ) and summ["final_test_acc"] is not None
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header == list(Classify.columns)
    assert config.from_dict(saved).task == "classify"


def test_sr_config_round_trips(hr_root):
    cfg = sr_cfg(hr_root, **{"sr.scale": 4, "sr.loss": "mse", "sr.patch_size": 16})
    d = config.to_dict(cfg)
    assert d["task"] == "sr" and d["sr"]["scale"] == 4
    assert resolve.from_dict((d)) == cfg and resolve.config_hash(config.from_dict(d)) == \
        resolve.config_hash(cfg)


@pytest.mark.parametrize("change,field", [
    ({"model.name": "resnet20"}, "model.name"),
    ({"data.name": "digits"}, "data.name"),
    ({"sr.scale": 5}, "sr.scale"),
    ({"sr.patch_size": 9}, "sr.patch_size"),
    ({"sr.loss": "l3"}, "sr.loss"),
    ({"sr.repeat": 0}, "sr.repeat"),
    ({"task": "detect"}, "task"),
])
def test_bad_sr_config_is_a_user_error(change, field, hr_root):
    with pytest.raises(UserError) as e:
        sr_cfg(hr_root, **change)
    assert e.value.field == field


def test_sr_keys_or_models_without_task_sr_are_refused():
    with pytest.raises(UserError) as e:
        resolve.build(flags={"sr.scale": 3})
    assert e.value.field == "sr.scale" and "task=sr" in str(e.value)
    with pytest.raises(UserError) as e:
        resolve.build(flags={"model.name": "srresnet"})
    assert e.value.field == "model.name"


def test_missing_sr_data_is_a_user_error(tmp_path):
    cfg = sr_cfg(tmp_path)
    with pytest.raises(UserError, match="train") as e:
        rundir.run(cfg, tmp_path / "run", echo=lambda line: None)
    assert e.value.field == "data.root"


def test_patch_larger_than_the_images_is_a_user_error(hr_root, tmp_path):
    with pytest.raises(UserError) as e:
        sr_data.load(sr_cfg(hr_root, **{"sr.patch_size": 32}), torch.device("cpu"))
    assert e.value.field == "sr.patch_size"
