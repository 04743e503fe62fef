"""What a run's seed controlled, recorded so that the report can tell which runs share their
randomness (summary.json ``seed_fingerprint``).

The trainer seeds torch, python and numpy with the run seed, builds the network (its
initial weights come from the global generator, and a method may draw more, e.g. SLB's
logits) and draws the order and augmentation of the training batches from a generator of
its own seeded with the run seed. ``seed_fingerprint`` hashes both at the end of set-up,
before the first step:

- ``data_order``: the state of the training-data generator (with the same data and batch
  size, equal states give the same batches in every epoch);
- ``init``: every parameter of the network, in order (equal: the same starting weights;
  buffers such as BN running statistics start at constants, and a method variant may keep
  more of them, e.g. SLB's State BN).

Two runs whose ``data_order`` agree saw their data in the same order, so their results are
paired by that seed; equal ``init`` as well means they started from the same network.
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn


def seed_fingerprint(model: nn.Module, data_generator: torch.Generator) -> dict[str, str]:
    """{"data_order": sha256 of the generator state, "init": sha256 of the network's
    parameters (names, shapes, dtypes and values)}, 16 hex digits each."""
    init = hashlib.sha256()
    for name, t in model.named_parameters():
        t = t.detach().cpu().contiguous()
        init.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        init.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    order = hashlib.sha256(data_generator.get_state().numpy().tobytes())
    return {"data_order": order.hexdigest()[:16], "init": init.hexdigest()[:16]}
