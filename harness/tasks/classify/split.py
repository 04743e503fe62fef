"""The validation split: part of the training images held out for every choice a study makes
(tuning, selection), so nothing is ever chosen on the test set.

``data.val_split`` is a fraction (< 1) or a count of the training images (after
``data.subset_train`` has picked them); they are drawn stratified by class with scikit-learn's
StratifiedShuffleSplit, seeded by ``data.val_seed`` and never by the run seed: every run of a
study that holds out a split holds out the same images, disjoint from the ones it trains on.
"""
from __future__ import annotations

import numpy as np

from harness.errors import require


def val_count(val_split: float, n: int) -> int:
    """How many of ``n`` training images the split holds out (a fraction rounds, at least 1)."""
    return max(1, int(round(val_split * n))) if val_split < 1 else int(val_split)


def hold_out(labels: np.ndarray, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training positions, validation positions) into ``labels``, both sorted: a stratified
    split of ``val_count`` images, the same for the same labels, size and seed."""
    from sklearn.model_selection import StratifiedShuffleSplit

    n, k = len(labels), val_count(val_split, len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    require(len(classes) <= k <= n - len(classes), "data.val_split",
            f"holds out {k} of {n} training images; with {len(classes)} classes keep at least "
            f"{len(classes)} on each side (a count between {len(classes)} and "
            f"{n - len(classes)}, or a fraction)")
    require(counts.min() >= 2, "data.val_split",
            f"class {classes[counts.argmin()]} has {counts.min()} training image(s); a "
            "stratified split needs at least 2 per class (use more training images)")
    split = StratifiedShuffleSplit(n_splits=1, test_size=k, random_state=seed)
    train, val = next(split.split(np.zeros((n, 1)), labels))
    return np.sort(train), np.sort(val)
