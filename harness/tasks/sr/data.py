"""Super-resolution data: HR images, their bicubic LR versions, training patches, test images.

Every SR dataset is one :class:`SrDataset` entry of ``SR_DATASETS`` (the classification
datasets are in harness/tasks/classify/data.py); the SR task (harness/tasks/sr/) reads only
this registry.

- ``hr_folder``: ``data.root`` holds ``train/`` and ``test/`` folders of HR images (PNG, JPEG,
  ...; searched recursively, sorted by path). DIV2K / Set5 / Set14 / B100 / Urban100 as
  downloaded fit by linking them: ``train -> DIV2K_train_HR``, ``test -> Set5/HR``; a ``test/``
  made of sub-folders (``test/Set5``, ``test/Set14``, ...) is several test sets, each scored
  on its own (the first one, in sorted order, is the primary one).
- ``sr_standin`` (the offline default): training HR images from ``data.root/train``
  (recursively; the CIFAR-10 JPEG copy in ../shared/data/cifar10-jpeg: 32x32 JPEG photos),
  evaluation on natural photographs that scikit-image ships inside its wheel (``STANDIN``:
  astronaut, camera, chelsea, coffee, rocket, coins). These are a small stand-in for
  Set5/Set14, NOT those sets: numbers on them are not comparable with published tables, and
  reports call the set "skimage stand-in". Grey photographs are used as R = G = B.

The degradation is harness.tasks.sr.metrics.degrade (MATLAB-style bicubic, 8-bit LR) applied
once at load to every mod-cropped HR image. Training draws, per image and per epoch
(``sr.repeat`` times), one random LR patch of ``sr.patch_size / scale`` pixels and the
aligned HR patch, with a random horizontal flip, vertical flip and transpose (the EDSR
augmentation) unless ``data.augment=false``. Training subsets (``data.subset_train`` images)
are a fixed random choice that does not depend on the run seed; ``data.subset_test`` keeps the
first images of each test set. Patches are cropped on the device from uint8 images kept there.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from harness.errors import UserError, require
from harness.tasks import images
from harness.tasks.classify.data import SUBSET_SEED
from harness.tasks.images import IMG_EXT
from harness.tasks.sr.metrics import (
    SSIM_WINDOW,
    bicubic_upscale,
    degrade,
    modcrop,
    psnr_y,
    ssim_y,
    to_uint8,
)

# scikit-image's bundled photographs used as the offline test set (all ship in its wheel)
STANDIN = ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins")
STANDIN_LABEL = "skimage stand-in (6 photographs shipped with scikit-image; not Set5/Set14)"
CROP = 64  # side (HR pixels) of the sample crops saved for the report's figure


# --------------------------------------------------------------------------- reading images

def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted by path."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMG_EXT and p.is_file())


def read_images(files: list[Path], notes: list[str] | None = None) -> list[np.ndarray]:
    """uint8 [3, H, W] arrays, decoded at their real depth (harness/tasks/images.py: 16-bit
    images scaled explicitly, greyscale and palette images converted to RGB); ``notes``
    takes each image's depth note."""
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(images.read_rgb, files))
    if notes is not None:
        notes += [n for _, n in decoded]
    return [img.transpose(2, 0, 1).copy() for img, _ in decoded]


def standin_images() -> list[tuple[str, np.ndarray]]:
    """The stand-in test photographs as (name, uint8 [3, H, W])."""
    from skimage import data as skdata

    out = []
    for name in STANDIN:
        img = np.asarray(getattr(skdata, name)(), dtype=np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append((name, img[..., :3].transpose(2, 0, 1).copy()))
    return out


def fixed_subset(n_items: int, n: int) -> np.ndarray:
    """The first n of a fixed permutation (sorted), regardless of the run seed; all if n <= 0."""
    if n <= 0 or n >= n_items:
        return np.arange(n_items)
    return np.sort(np.random.default_rng(SUBSET_SEED).permutation(n_items)[:n])


# --------------------------------------------------------------------------- registry

def _check_train(root: Path) -> None:
    require(root.is_dir(), "data.root", f"{str(root)!r} is not a directory; pass --data-root DIR")
    train = root / "train"
    require(train.is_dir() and next(iter(list_images(train)), None) is not None, "data.root",
            f"{str(train)!r} holds no images; the SR datasets need DIR/train/ with HR images "
            "(e.g. a link to DIV2K_train_HR, or the CIFAR-10 JPEG copy)")


def _check_folder(root: Path) -> None:
    _check_train(root)
    test = root / "test"
    require(test.is_dir() and next(iter(list_images(test)), None) is not None, "data.root",
            f"{str(test)!r} holds no images; hr_folder needs DIR/test/ with HR test images "
            "(or DIR/test/<set>/ for several sets), or use data.name=sr_standin")


def _folder_test_sets(root: Path, notes: list[str]
                      ) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    test = root / "test"
    subs = sorted(d for d in test.iterdir() if d.is_dir() and list_images(d))
    groups = [(d.name, list_images(d)) for d in subs] or [(test.name, list_images(test))]
    return [(name, [(f.stem, img) for f, img in zip(files, read_images(files, notes))])
            for name, files in groups]


def _standin_test_sets(root: Path, notes: list[str]
                       ) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    return [("skimage", standin_images())]


@dataclass(frozen=True)
class SrDataset:
    """One SR data source: training HR images from ``data.root/train``, test sets from
    ``test_sets(root, notes)`` as [(set name, [(image name, uint8 [3, H, W])])] (``notes``
    takes each image's depth note)."""

    name: str
    description: str
    test_sets: Callable[[Path, list[str]], list[tuple[str, list[tuple[str, np.ndarray]]]]]
    check_files: Callable[[Path], None]
    test_label: Callable[[Path], str]


SR_DATASETS: dict[str, SrDataset] = {d.name: d for d in (
    SrDataset("hr_folder", "SR: HR images in DIR/train and DIR/test (or DIR/test/<set>/), "
              "bicubic LR made here", _folder_test_sets, _check_folder,
              lambda root: f"HR folder {root}/test"),
    SrDataset("sr_standin", "SR: training HR patches from DIR/train (e.g. the CIFAR-10 JPEG "
              "copy), test on scikit-image's bundled photos (a stand-in, not Set5/Set14)",
              _standin_test_sets, _check_train, lambda root: STANDIN_LABEL),
)}


def check_name(name: str) -> None:
    require(name in SR_DATASETS, "data.name",
            f"{name!r} is not a super-resolution dataset; with task=sr use one of "
            f"{sorted(SR_DATASETS)}")


def check_root(dcfg) -> None:
    """Fail fast (before any work) on a data root without the files the dataset needs."""
    check_name(dcfg.name)
    require(bool(dcfg.root), "data.root", f"dataset {dcfg.name} needs a data root; pass "
            "--data-root DIR (DIR/train with HR images)")
    SR_DATASETS[dcfg.name].check_files(Path(dcfg.root))


def test_label(dcfg) -> str:
    return SR_DATASETS[dcfg.name].test_label(Path(dcfg.root))


# --------------------------------------------------------------------------- on the device

@dataclass
class TestImage:
    name: str
    hr: torch.Tensor       # uint8 [3, H, W], mod-cropped
    lr: torch.Tensor       # uint8 [3, H/s, W/s]


class SrData:
    """HR/LR pairs on the device. ``train_batches`` yields (LR, HR) float patches in [0, 1];
    ``test_sets`` holds whole test images. ``num_classes`` is the number of output channels
    (what SR model factories take in the classification factories' num_classes slot)."""
    streamed = False

    def __init__(self, train_hr: list[np.ndarray], test_sets, scfg, augment: bool,
                 device: torch.device, notes: tuple[str, ...] = ()):
        s, patch = scfg.scale, scfg.patch_size
        self.scale, self.patch, self.repeat, self.augment = s, patch, scfg.repeat, augment
        self.device = device
        self.train_hr, self.train_lr = [], []
        for img in train_hr:
            hr = modcrop(torch.from_numpy(img), s)
            require(min(hr.shape[-2:]) >= patch, "sr.patch_size",
                    f"{patch} is larger than a training image ({tuple(hr.shape[-2:])} after "
                    f"cropping to a multiple of {s}); use sr.patch_size <= {min(hr.shape[-2:])}")
            self.train_hr.append(hr)
        self.train_lr = _degrade_all(self.train_hr, s)
        self.train_hr = [t.to(device) for t in self.train_hr]
        self.train_lr = [t.to(device) for t in self.train_lr]
        self.test_sets: list[tuple[str, list[TestImage]]] = []
        for set_name, imgs in test_sets:
            items = []
            for name, img in imgs:
                hr = modcrop(torch.from_numpy(img), s)
                check_test_image(f"{set_name}/{name}", tuple(img.shape[-2:]), s)
                items.append(TestImage(name, hr.to(device), degrade(hr, s).to(device)))
            self.test_sets.append((set_name, items))
        if notes:  # images not stored at 8 bits: how they were mapped
            self.fingerprint = {"decoding": "; ".join(notes)}
        self.num_classes = self.in_channels = 3
        self.image_size = (patch // s, patch // s)
        self.bicubic = self._bicubic_scores()

    @property
    def num_train(self) -> int:
        return len(self.train_hr) * self.repeat

    @property
    def num_test(self) -> int:
        return sum(len(items) for _, items in self.test_sets)

    def steps_per_epoch(self, batch_size: int) -> int:
        full, rest = divmod(self.num_train, batch_size)
        return full + (1 if rest >= 2 else 0)  # a 1-patch batch would break BN: dropped

    def _bicubic_scores(self) -> dict[str, dict[str, float]]:
        """PSNR/SSIM of bicubic upscaling per test set (the floor row of the report)."""
        out = {}
        for set_name, items in self.test_sets:
            ps, ss = [], []
            for t in items:
                up = to_uint8(bicubic_upscale(t.lr.cpu(), self.scale))
                ps.append(psnr_y(up, t.hr.cpu(), self.scale))
                ss.append(ssim_y(up, t.hr.cpu(), self.scale))
            out[set_name] = {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss))}
        return out

    def _patch(self, i: int, where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image i's LR patch at relative position ``where`` (2 numbers in [0, 1)) and the
        aligned HR patch."""
        s, p = self.scale, self.patch // self.scale
        lr, hr = self.train_lr[i], self.train_hr[i]
        h, w = lr.shape[-2:]
        y, x = int(where[0] * (h - p + 1)), int(where[1] * (w - p + 1))
        return (lr[:, y: y + p, x: x + p],
                hr[:, y * s: (y + p) * s, x * s: (x + p) * s])

    @staticmethod
    def _augment(lr: torch.Tensor, hr: torch.Tensor, flips: torch.Tensor):
        """Horizontal flip, vertical flip, transpose (flips: 3 booleans), applied to both."""
        if flips[0]:
            lr, hr = lr.flip(-1), hr.flip(-1)
        if flips[1]:
            lr, hr = lr.flip(-2), hr.flip(-2)
        if flips[2]:
            lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
        return lr, hr

    def train_batches(self, batch_size: int, gen: torch.Generator,
                      augment: bool | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch: every training image ``repeat`` times, in a random order, one random
        patch each. Random numbers come from ``gen`` (a CPU generator)."""
        augment = self.augment if augment is None else augment
        order = torch.randperm(self.num_train, generator=gen) % len(self.train_hr)
        where = torch.rand(self.num_train, 2, generator=gen)
        flips = torch.rand(self.num_train, 3, generator=gen) < 0.5
        for b in range(self.steps_per_epoch(batch_size)):
            lrs, hrs = [], []
            for j in range(b * batch_size, min((b + 1) * batch_size, self.num_train)):
                lr, hr = self._patch(int(order[j]), where[j])
                if augment:
                    lr, hr = self._augment(lr, hr, flips[j])
                lrs.append(lr)
                hrs.append(hr)
            yield (torch.stack(lrs).float() / 255.0, torch.stack(hrs).float() / 255.0)

    def test_batches(self, batch_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every test image of every set, one at a time, as (LR, HR) floats [1, 3, h, w]."""
        for _, items in self.test_sets:
            for t in items:
                yield t.lr[None].float() / 255.0, t.hr[None].float() / 255.0


def check_test_image(name: str, shape: tuple[int, int], scale: int) -> None:
    """A test image must keep pixels to score once cropped to a multiple of ``scale`` and
    shaved by ``scale`` pixels on each side, and hold SSIM's window: a UserError otherwise."""
    least = 2 * scale + SSIM_WINDOW
    side = min(d - d % scale for d in shape)
    require(side >= least, "data.root",
            f"test image {name} is {shape[0]}x{shape[1]} pixels; at sr.scale {scale} a test "
            f"image needs at least {least} per side (a multiple of {scale}, {scale} shaved "
            f"from each border, SSIM's {SSIM_WINDOW}-pixel window): remove it or use larger "
            "test images")


def _degrade_all(hrs: list[torch.Tensor], scale: int) -> list[torch.Tensor]:
    """degrade() for many images; same-sized images in batches of 1024."""
    out: list[torch.Tensor | None] = [None] * len(hrs)
    by_shape: dict[tuple, list[int]] = {}
    for i, t in enumerate(hrs):
        by_shape.setdefault(tuple(t.shape), []).append(i)
    for idx in by_shape.values():
        for k in range(0, len(idx), 1024):
            chunk = idx[k: k + 1024]
            lr = degrade(torch.stack([hrs[i] for i in chunk]), scale)
            for i, t in zip(chunk, lr):
                out[i] = t.clone()
    return out  # type: ignore[return-value]


def load(cfg, device: torch.device) -> SrData:
    """The SR data of a resolved RunConfig (task sr)."""
    dcfg = cfg.data
    check_root(dcfg)
    root = Path(dcfg.root)
    train_notes: list[str] = []
    test_notes: list[str] = []
    try:
        files = list_images(root / "train")
        files = [files[i] for i in fixed_subset(len(files), dcfg.subset_train)]
        train = read_images(files, train_notes)
        test_sets = SR_DATASETS[dcfg.name].test_sets(root, test_notes)
    except UserError:
        raise
    except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise UserError("data.root", f"cannot read the images under {str(root)!r} "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                        "check the files") from None
    if dcfg.subset_test > 0:
        test_sets = [(n, imgs[: dcfg.subset_test]) for n, imgs in test_sets]
    notes = tuple(f"{split}: {n}" for split, ns in (("train", train_notes), ("test", test_notes))
                  for n in images.notes_of(ns))
    return SrData(train, test_sets, cfg.task_options, bool(dcfg.augment), device, notes)


def describe_datasets() -> dict[str, str]:
    """Dataset name -> its one-line description (for help texts)."""
    return {name: d.description for name, d in SR_DATASETS.items()}
