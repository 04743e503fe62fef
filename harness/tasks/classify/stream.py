"""ImageNet-size image folders, streamed through a DataLoader with the usual ResNet
transforms (harness/tasks/classify/data.py holds the small datasets on the device). Subsets and
the validation split are chosen as for the small datasets: class-balanced, fixed, and the
validation images (from the training folder, with the test transforms) held out of training."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harness.tasks import images
from harness.tasks.classify import split
from harness.tasks.classify.data import (
    Arrays,
    balanced_subset,
    fingerprint,
    imagefolder_splits,
)


class StreamingData:
    """ImageNet-size image folders: a DataLoader with the usual ResNet transforms."""
    streamed = True

    def __init__(self, root: Path, dcfg, device: torch.device):
        from torchvision import datasets, transforms

        train, test = imagefolder_splits(root)
        # ImageNet's per-channel statistics (the export's input contract reads them)
        self.mean, self.std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
        norm = transforms.Normalize(self.mean, self.std)
        aug = [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]
        plain = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                                    transforms.ToTensor(), norm])
        self.train_set = datasets.ImageFolder(  # decoded at their real depth (images.py)
            str(train), transforms.Compose(aug + [transforms.ToTensor(), norm])
            if dcfg.augment else plain, loader=images.pil_rgb)
        self.val_set = datasets.ImageFolder(str(train), plain, loader=images.pil_rgb)
        self.test_set = datasets.ImageFolder(str(test), plain, loader=images.pil_rgb)
        self.classes = self.train_set.classes
        self.num_classes = len(self.classes)
        ytr = np.asarray(self.train_set.targets)
        yte = np.asarray(self.test_set.targets)
        self.train_idx = balanced_subset(ytr, dcfg.subset_train, self.num_classes)
        self.test_idx = balanced_subset(yte, dcfg.subset_test, self.num_classes)
        self.val_idx = np.zeros((0,), np.int64)
        if dcfg.val_split:
            keep, val = split.hold_out(ytr[self.train_idx], dcfg.val_split, dcfg.val_seed)
            self.train_idx, self.val_idx = self.train_idx[keep], self.train_idx[val]
        files = tuple(Path(p) for p, _ in self.train_set.samples + self.test_set.samples)
        empty = np.zeros((0,), np.uint8)
        val = {} if not dcfg.val_split else {
            "x_val": empty, "y_val": ytr[self.val_idx], "val_indices": self.val_idx}
        self.fingerprint = {**fingerprint(Arrays(empty, ytr[self.train_idx], empty,
                                                 yte[self.test_idx], self.classes, files,
                                                 (self.train_idx, self.test_idx), **val)),
                            "content": "not hashed (streamed)"}
        self.in_channels, self.image_size = 3, (224, 224)
        self.device, self.workers = device, dcfg.workers

    @property
    def num_train(self) -> int:
        return len(self.train_idx)

    @property
    def num_test(self) -> int:
        return len(self.test_idx)

    @property
    def num_val(self) -> int:
        return len(self.val_idx)

    def steps_per_epoch(self, batch_size: int) -> int:
        full, rest = divmod(self.num_train, batch_size)
        return full + (1 if rest >= 2 else 0)

    def _loader(self, ds, idx, batch_size, gen=None):
        from torch.utils.data import DataLoader, Subset

        return DataLoader(Subset(ds, idx.tolist()), batch_size=batch_size, shuffle=gen is not None,
                          generator=gen, num_workers=self.workers, drop_last=False,
                          pin_memory=self.device.type == "cuda")

    def train_batches(self, batch_size, gen, augment=None):
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        loader_gen = torch.Generator().manual_seed(seed)
        if self.workers == 0:  # transforms then draw from the global RNG: seed it per epoch
            torch.manual_seed(seed)
        for i, (x, y) in enumerate(self._loader(self.train_set, self.train_idx, batch_size,
                                                loader_gen)):
            if i >= self.steps_per_epoch(batch_size):
                break
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def test_batches(self, batch_size):
        for x, y in self._loader(self.test_set, self.test_idx, batch_size):
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def val_batches(self, batch_size):
        for x, y in self._loader(self.val_set, self.val_idx, batch_size):
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
