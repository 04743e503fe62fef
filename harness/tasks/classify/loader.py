"""The dataset of a classification run: the images in memory (data.py), or streamed from an
ImageNet-size folder (stream.py)."""
from __future__ import annotations

from pathlib import Path

import torch

from harness.tasks.classify import data
from harness.tasks.classify.stream import StreamingData


def load(dcfg, device: torch.device):
    """InMemoryData (or StreamingData for ImageNet-size folders) for a DataConfig."""
    d = data.DATASETS.get(dcfg.name)
    if d is not None and d.stream is not None:
        data.check_root(dcfg)
        with data.readable(dcfg):
            if data.is_streamed(dcfg.name, dcfg.root):
                return StreamingData(Path(dcfg.root), dcfg, device)
    return data.InMemoryData(data.load_arrays(dcfg), device, bool(dcfg.augment))
