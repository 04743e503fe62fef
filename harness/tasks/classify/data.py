"""Datasets as uint8 tensors on the run's device, with batch-wise augmentation there.

Why uint8 on the device: a CIFAR-sized dataset fits in a few hundred MB, so keeping it
resident removes DataLoader workers, host-to-device copies and per-image Python from the
step loop; crop and flip are a handful of tensor ops per batch. ImageNet-size folders stream
through a DataLoader instead (harness/tasks/classify/stream.py).

Subsets are class-balanced and chosen with a fixed generator that does not depend on the run
seed, so every method and seed of a study sees the same images.

Every dataset is one :class:`Dataset` entry of ``DATASETS`` (name, one-line description, loader,
default augmentation, data root, root check); :func:`check_name`, :func:`default_augment`,
:func:`check_root`, :func:`load` and :func:`describe_datasets` read only that registry.
Super-resolution data (HR images, bicubic LR, patches) is harness/tasks/sr/data.py, with its own
registry.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import UserError, did_you_mean, require
from harness.tasks import images
from harness.tasks.classify.split import hold_out
from harness.tasks.images import IMG_EXT

SUBSET_SEED = 20201  # fixed: subsets never depend on the run seed
FASHION_MNIST_DEBIAN = "/usr/share/datasets/fashion-mnist"
SMALL_IMAGE_MAX = 64  # imagefolder images up to this size are held in memory


@dataclass
class Arrays:
    x_train: np.ndarray  # uint8 [N, C, H, W]
    y_train: np.ndarray  # int64 [N]
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    files: tuple = ()                 # the files the data came from (for the fingerprint)
    indices: tuple | None = None      # (train, test) subset indices into those splits
    x_val: np.ndarray | None = None   # the validation split (data.val_split), held out of
    y_val: np.ndarray | None = None   # the training images
    val_indices: np.ndarray | None = None  # its indices into the training split
    notes: tuple = ()                 # how image depths were mapped (harness/tasks/images.py)


def _sha(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode() + str(a.dtype).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()[:16]


def fingerprint(a: Arrays) -> dict[str, Any]:
    """What identifies the data a run trained on: the source files (count, total bytes, a
    hash of their names and sizes), the subset indices, and a hash of the pixels and labels
    themselves. Two runs with equal ``content`` saw the same images."""
    sizes = [(str(f), f.stat().st_size) for f in a.files]
    out = {"n_train": int(len(a.y_train)), "n_test": int(len(a.y_test)),
           "classes": len(a.classes), "source_files": len(sizes),
           "source_bytes": int(sum(n for _, n in sizes)),
           "source_list": hashlib.sha256(repr(sizes).encode(errors="surrogateescape")
                                         ).hexdigest()[:16],
           "subset": _sha(*a.indices) if a.indices is not None else "all",
           "content": _sha(a.x_train, a.y_train, a.x_test, a.y_test)}
    if a.notes:  # images not stored at 8 bits: how they were mapped
        out["decoding"] = "; ".join(a.notes)
    if a.y_val is not None:
        out["val"] = val_fingerprint(a)
    return out


def val_fingerprint(a: Arrays) -> dict[str, Any]:
    """The validation split: its size, the hash of its indices into the training split (equal
    for every run that holds out the same images) and of its pixels and labels."""
    return {"n_val": int(len(a.y_val)), "indices": _sha(a.val_indices),
            "content": _sha(a.x_val, a.y_val) if a.x_val is not None and a.x_val.size
            else "not hashed (streamed)"}


def with_val_split(a: Arrays, dcfg) -> Arrays:
    """``a`` with ``dcfg.val_split`` of its training images moved to the validation split
    (harness/tasks/classify/split.py); unchanged without a split."""
    if not dcfg.val_split:
        return a
    train, val = hold_out(a.y_train, dcfg.val_split, dcfg.val_seed)
    pool = a.indices[0] if a.indices is not None else np.arange(len(a.y_train))
    test = a.indices[1] if a.indices is not None else np.arange(len(a.y_test))
    return dataclasses.replace(a, x_train=a.x_train[train], y_train=a.y_train[train],
                               x_val=a.x_train[val], y_val=a.y_train[val],
                               indices=(pool[train], test), val_indices=pool[val])


# --------------------------------------------------------------------------- subsets

def balanced_subset(labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    """Indices of n items, as equal per class as possible, fixed regardless of run seed."""
    if n <= 0 or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(SUBSET_SEED)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
    quota = np.full(num_classes, n // num_classes)
    quota[: n % num_classes] += 1
    # a class with too few items gives its remainder to the others, in class order
    taken = [min(q, len(p)) for q, p in zip(quota, per_class)]
    spare = n - sum(taken)
    for c in range(num_classes):
        extra = min(spare, len(per_class[c]) - taken[c])
        taken[c] += extra
        spare -= extra
    return np.sort(np.concatenate([p[:t] for p, t in zip(per_class, taken)]))


# --------------------------------------------------------------------------- loaders

def _load_digits() -> Arrays:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = np.round(d.data * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    # fixed stratified split: 75% train / 25% test
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    return Arrays(xtr, ytr, xte, yte, [str(i) for i in range(10)])


def _cifar_dir(root: Path, folder: str, download: bool, cifar100: bool) -> Path:
    for cand in (root, root / folder):
        if (cand / ("train" if cifar100 else "data_batch_1")).is_file():
            return cand
    if download:
        from torchvision import datasets

        (datasets.CIFAR100 if cifar100 else datasets.CIFAR10)(str(root), download=True)
        return root / folder
    raise UserError("data.root", f"no {folder} found under {str(root)!r}; point --data-root at "
                    f"the folder holding {folder} (official python version) or pass --download")


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _load_cifar(root: Path, download: bool, cifar100: bool) -> Arrays:
    folder = "cifar-100-python" if cifar100 else "cifar-10-batches-py"
    d = _cifar_dir(root, folder, download, cifar100)
    key = b"fine_labels" if cifar100 else b"labels"
    if cifar100:
        train, test = [_unpickle(d / "train")], [_unpickle(d / "test")]
        meta = _unpickle(d / "meta")[b"fine_label_names"]
    else:
        train = [_unpickle(d / f"data_batch_{i}") for i in range(1, 6)]
        test = [_unpickle(d / "test_batch")]
        meta = _unpickle(d / "batches.meta")[b"label_names"]

    def stack(batches):
        x = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
        y = np.concatenate([np.asarray(b[key]) for b in batches]).astype(np.int64)
        return x.astype(np.uint8), y

    xtr, ytr = stack(train)
    xte, yte = stack(test)
    files = ((d / "train", d / "test", d / "meta") if cifar100 else
             tuple(d / f"data_batch_{i}" for i in range(1, 6)) + (d / "test_batch",
                                                                     d / "batches.meta"))
    return Arrays(xtr, ytr, xte, yte, [m.decode() for m in meta], files)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    require(zero == 0 and dtype == 0x08, "data.root", f"{path} is not a uint8 idx file")
    dims = struct.unpack(">" + "I" * ndim, data[4: 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(root: Path, stem: str, name: str) -> Path:
    for d in (root, root / "raw", root / "MNIST" / "raw", root / "FashionMNIST" / "raw"):
        for suffix in ("", ".gz"):
            if (d / (stem + suffix)).is_file():
                return d / (stem + suffix)
    raise UserError("data.root", f"{stem}[.gz] not found under {str(root)!r}; point --data-root "
                    f"at the folder holding the {name} idx files")


def _load_idx_dataset(root: Path, name: str) -> Arrays:
    parts, files = {}, []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        fx = _find_idx(root, f"{prefix}-images-idx3-ubyte", name)
        fy = _find_idx(root, f"{prefix}-labels-idx1-ubyte", name)
        files += [fx, fy]
        parts[split] = (_read_idx(fx)[:, None].copy(), _read_idx(fy).astype(np.int64))
    return Arrays(*parts["train"], *parts["test"], [str(i) for i in range(10)], tuple(files))


def imagefolder_splits(root: Path) -> tuple[Path, Path]:
    train = root / "train"
    test = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    require(train.is_dir() and test is not None, "data.root",
            f"{str(root)!r} needs train/ and test/ (or val/) subfolders with one folder per "
            "class; point --data-root at it")
    return train, test


def _image_files(folder: Path) -> list[Path]:
    """The image files of a class folder, sorted; anything with an image suffix that is not
    a regular file (a FIFO, a folder) is refused before it is opened."""
    out = []
    with os.scandir(folder) as it:
        for entry in it:
            if Path(entry.name).suffix.lower() in IMG_EXT:
                if not entry.is_file():
                    images.check_regular(Path(entry.path))
                out.append(Path(entry.path))
    return sorted(out)


def _list_images(split: Path,
                 classes: list[str] | None) -> tuple[list[Path], np.ndarray, list[str]]:
    found = sorted(d.name for d in split.iterdir() if d.is_dir())
    classes = classes or found
    require(found == classes, "data.root", f"{split} has classes {found[:5]}... which differ "
            "from train/; both splits need the same class folders")
    files, labels = [], []
    for i, c in enumerate(classes):
        fs = _image_files(split / c)
        files += fs
        labels += [i] * len(fs)
    require(files, "data.root", f"no images under {split}; expected {split}/<class>/*.jpg")
    require(len(classes) >= 2, "data.root", f"{split} has {len(classes)} class folder(s); a "
            "classification needs at least two (one folder per class)")
    return files, np.asarray(labels, dtype=np.int64), classes


def _image_size(root: Path) -> tuple[int, int]:
    train, _ = imagefolder_splits(root)
    files, _, _ = _list_images(train, None)
    return images.image_size(files[0])


def _is_large(root: str) -> bool:
    """Whether an image folder's images are too large to hold in memory (ImageNet-size)."""
    return max(_image_size(Path(root))) > SMALL_IMAGE_MAX


# --------------------------------------------------------------------------- root checks

_IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _check_cifar(root: Path, dcfg) -> None:
    if not dcfg.download:
        cifar100 = dcfg.name == "cifar100"
        _cifar_dir(root, "cifar-100-python" if cifar100 else "cifar-10-batches-py", False,
                   cifar100)


def _check_idx(root: Path, dcfg) -> None:
    for stem in _IDX_STEMS:
        _find_idx(root, stem, dcfg.name)


def _check_imagefolder(root: Path, dcfg) -> None:
    train, _ = imagefolder_splits(root)
    _list_images(train, None)


# --------------------------------------------------------------------------- loaders by config

def _subsets(a: Arrays, dcfg) -> Arrays:
    """The class-balanced train/test subsets of ``dcfg`` (all of a split when its size is 0)."""
    k = len(a.classes)
    itr = balanced_subset(a.y_train, dcfg.subset_train, k)
    ite = balanced_subset(a.y_test, dcfg.subset_test, k)
    return Arrays(a.x_train[itr], a.y_train[itr], a.x_test[ite], a.y_test[ite], a.classes,
                  a.files, (itr, ite))


def _load_imagefolder(root: Path, dcfg) -> Arrays:
    """Decodes only the selected subset of the image files."""
    train, test = imagefolder_splits(root)
    ftr, ytr, classes = _list_images(train, None)
    fte, yte, _ = _list_images(test, classes)
    itr = balanced_subset(ytr, dcfg.subset_train, len(classes))
    ite = balanced_subset(yte, dcfg.subset_test, len(classes))
    xtr, ntr = images.decode_many([ftr[i] for i in itr])
    xte, nte = images.decode_many([fte[i] for i in ite])
    return Arrays(xtr, ytr[itr], xte, yte[ite], classes, tuple(ftr + fte), (itr, ite),
                  notes=tuple(f"{split}: {n}" for split, ns in (("train", ntr), ("test", nte))
                              for n in ns))


# --------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class Dataset:
    """Everything the harness knows about one dataset.

    ``load(root, dcfg)`` returns the subsets ``dcfg`` selects; ``root`` is ``dcfg.root`` or,
    when that is empty, ``default_root`` (already checked by :func:`check_root`).
    ``data_root``: whether ``--data-root`` is "required", "optional" (``default_root`` is used
    without it) or "unused". ``check_files(root, dcfg)`` fails fast on a root without the
    dataset's files. ``stream(root)``: whether to stream the data through a DataLoader
    (harness/tasks/classify/stream.py) instead of holding it on the device.
    """

    name: str
    description: str                          # one line, for the CLI's help
    load: Callable[[Path, Any], Arrays]
    photo: bool = False                       # natural photos: crop+flip unless data.augment set
    data_root: str = "required"
    default_root: str = ""
    check_files: Callable[[Path, Any], None] | None = None
    stream: Callable[[str], bool] | None = None
    shape: tuple[int, int, int, int] | None = None  # (channels, height, width, classes), if fixed


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset(
        "digits", "scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), built in",
        load=lambda root, dcfg: _subsets(_load_digits(), dcfg),
        data_root="unused", shape=(1, 8, 8, 10)),
    Dataset(
        "cifar10", "CIFAR-10: 32x32 colour photos, 10 classes (official python version; "
        "--download fetches it)",
        load=lambda root, dcfg: _subsets(_load_cifar(root, dcfg.download, False), dcfg),
        photo=True, check_files=_check_cifar, shape=(3, 32, 32, 10)),
    Dataset(
        "cifar100", "CIFAR-100: 32x32 colour photos, 100 classes (official python version; "
        "--download fetches it)",
        load=lambda root, dcfg: _subsets(_load_cifar(root, dcfg.download, True), dcfg),
        photo=True, check_files=_check_cifar, shape=(3, 32, 32, 100)),
    Dataset(
        "mnist", "MNIST: 28x28 handwritten digits, 10 classes (the four idx files, .gz or not)",
        load=lambda root, dcfg: _subsets(_load_idx_dataset(root, "mnist"), dcfg),
        check_files=_check_idx, shape=(1, 28, 28, 10)),
    Dataset(
        "fashion-mnist", "Fashion-MNIST: 28x28 clothing, 10 classes (idx files; default "
        f"{FASHION_MNIST_DEBIAN})",
        load=lambda root, dcfg: _subsets(_load_idx_dataset(root, "fashion-mnist"), dcfg),
        data_root="optional", default_root=FASHION_MNIST_DEBIAN, check_files=_check_idx,
        shape=(1, 28, 28, 10)),
    Dataset(
        "imagefolder", "train/ and test/ (or val/), a folder per class; images over "
        f"{SMALL_IMAGE_MAX} px are streamed at 224 px",
        load=_load_imagefolder,
        photo=True, check_files=_check_imagefolder, stream=_is_large),
)}


def describe_datasets() -> dict[str, str]:
    """Dataset name -> its one-line description (for help texts)."""
    return {name: d.description for name, d in DATASETS.items()}


def check_name(name: str) -> None:
    require(name in DATASETS, "data.name",
            f"unknown dataset {name!r}{did_you_mean(name, DATASETS)}")


def default_augment(name: str) -> bool:
    """Crop+flip by default for photo datasets (when ``data.augment`` is not set)."""
    return name in DATASETS and DATASETS[name].photo


def _root(dcfg) -> Path:
    return Path(dcfg.root or DATASETS[dcfg.name].default_root)


def is_streamed(name: str, root: str) -> bool:
    """Whether ``load`` streams this dataset through a DataLoader (ImageNet-size folders)."""
    d = DATASETS.get(name)
    return d is not None and d.stream is not None and d.stream(root)


def check_root(dcfg) -> None:
    """Fail fast (before any work is submitted) on a missing or malformed data root."""
    check_name(dcfg.name)
    d, root = DATASETS[dcfg.name], dcfg.root
    if d.data_root == "unused":
        return
    require(root or d.data_root != "required", "data.root",
            f"dataset {d.name} needs a data root; pass --data-root DIR")
    require(not root or Path(root).is_dir(), "data.root",
            f"{root!r} is not a directory; pass --data-root DIR")
    if d.check_files is not None:
        d.check_files(_root(dcfg), dcfg)


# --------------------------------------------------------------------------- on the device

class InMemoryData:
    """A whole (subset of a) dataset as uint8 on the device, augmented batch-wise there."""
    streamed = False

    def __init__(self, arrays: Arrays, device: torch.device, augment: bool):
        self.fingerprint = fingerprint(arrays)
        self.classes = arrays.classes
        self.num_classes = len(arrays.classes)
        self.x_train = torch.from_numpy(arrays.x_train).to(device)
        self.y_train = torch.from_numpy(arrays.y_train).to(device)
        self.x_test = torch.from_numpy(arrays.x_test).to(device)
        self.y_test = torch.from_numpy(arrays.y_test).to(device)
        has_val = arrays.x_val is not None
        self.x_val = torch.from_numpy(arrays.x_val).to(device) if has_val else None
        self.y_val = torch.from_numpy(arrays.y_val).to(device) if has_val else None
        self.in_channels = self.x_train.shape[1]
        self.image_size = tuple(self.x_train.shape[2:])
        self.augment = augment
        self.device = device
        xf = torch.from_numpy(arrays.x_train).double() / 255.0
        self.mean = xf.mean(dim=(0, 2, 3)).float().reshape(1, -1, 1, 1).to(device)
        self.std = xf.std(dim=(0, 2, 3)).clamp_min(1e-3).float().reshape(1, -1, 1, 1).to(device)

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    @property
    def num_test(self) -> int:
        return len(self.y_test)

    @property
    def num_val(self) -> int:
        return 0 if self.y_val is None else len(self.y_val)

    def steps_per_epoch(self, batch_size: int) -> int:
        full, rest = divmod(self.num_train, batch_size)
        return full + (1 if rest >= 2 else 0)  # a 1-image batch would break BN: dropped

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std

    def _crop_flip(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Random 4-pixel-padded crop and horizontal flip, for the whole batch at once.

        ``gen`` lives on x's device (see train_batches), so no host round trip per batch."""
        b, _, h, w = x.shape
        shift = torch.randint(0, 9, (b, 2), generator=gen, device=gen.device).to(x.device)
        flip = (torch.rand(b, generator=gen, device=gen.device) < 0.5).to(x.device)
        padded = F.pad(x, (4, 4, 4, 4))
        rows = shift[:, :1] + torch.arange(h, device=x.device)
        cols = shift[:, 1:] + torch.arange(w, device=x.device)
        idx = torch.arange(b, device=x.device)[:, None, None]
        out = padded[idx, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        return torch.where(flip[:, None, None, None], out.flip(3), out)

    def train_batches(self, batch_size: int, gen: torch.Generator,
                      augment: bool | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        augment = self.augment if augment is None else augment
        if self.device.type != "cpu" and gen.device.type == "cpu":
            # draw on the device from a generator seeded by the run's CPU generator: the step
            # loop never waits for the host, and the checkpointed CPU state still fixes it all
            seed = int(torch.randint(0, 2**62, (1,), generator=gen))
            gen = torch.Generator(self.device).manual_seed(seed)
        perm = torch.randperm(self.num_train, generator=gen, device=gen.device).to(self.device)
        for i in range(self.steps_per_epoch(batch_size)):
            idx = perm[i * batch_size: (i + 1) * batch_size]
            x = self.x_train[idx]
            if augment:
                x = self._crop_flip(x, gen)
            yield self.normalize(x), self.y_train[idx]

    def test_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, self.num_test, batch_size):
            yield self.normalize(self.x_test[i: i + batch_size]), self.y_test[i: i + batch_size]

    def val_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The validation split, unaugmented (data.val_split; none without one)."""
        for i in range(0, self.num_val, batch_size):
            yield self.normalize(self.x_val[i: i + batch_size]), self.y_val[i: i + batch_size]


def load_arrays(dcfg) -> Arrays:
    """The selected (subset of the) dataset as numpy arrays.

    Unreadable files (truncated pickles or idx files, images PIL cannot open) are user
    errors naming data.root, not tracebacks."""
    check_name(dcfg.name)
    check_root(dcfg)
    with _readable(dcfg):
        return _load_arrays(dcfg)


@contextlib.contextmanager
def _readable(dcfg) -> Iterator[None]:
    """Turn unreadable data (truncated pickle/idx files, files PIL cannot open) into a
    one-line user error naming data.root."""
    try:
        yield
    except UserError:
        raise
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
            pickle.UnpicklingError) as e:  # PIL's UnidentifiedImageError is an OSError
        detail = str(e).splitlines()[0] if str(e) else "malformed file"
        raise UserError("data.root", f"cannot read the {dcfg.name} data under "
                        f"{dcfg.root or 'the default location'!r} ({type(e).__name__}: "
                        f"{detail}); check the files or point --data-root at an intact copy"
                        ) from None


def _load_arrays(dcfg) -> Arrays:
    return with_val_split(DATASETS[dcfg.name].load(_root(dcfg), dcfg), dcfg)


def load(dcfg, device: torch.device):
    """InMemoryData (or StreamingData for ImageNet-size folders) for a DataConfig."""
    d = DATASETS.get(dcfg.name)
    if d is not None and d.stream is not None:
        check_root(dcfg)
        with _readable(dcfg):
            if is_streamed(dcfg.name, dcfg.root):
                from harness.tasks.classify.stream import StreamingData

                return StreamingData(Path(dcfg.root), dcfg, device)
    return InMemoryData(load_arrays(dcfg), device, bool(dcfg.augment))
