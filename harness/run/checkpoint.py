"""Tensor files (checkpoints, deployed.pt): written atomically, loaded weights-only; and the
random-number states a checkpoint holds, as tensors and plain values, so it loads so too."""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import files


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    """Every RNG a run draws from, as tensors and plain values (loadable weights-only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                       float(gauss)],
             "data": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    gen.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def plain_row(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics row as Python numbers (numpy/torch scalars would not load weights-only)."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def save_tensors(path: Path, obj: Any) -> None:
    """``obj`` saved atomically. Serialised in memory first: torch's zip writer turns a
    failed write (a full disk, a file size limit) into a RuntimeError about stream
    positions, while a plain write raises the OSError that says what happened (one line)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    files.atomic_write(path, lambda f: f.write(buf.getbuffer()))


def load_tensors(path: Path, device: Any = "cpu") -> Any:
    """torch.load that can never run code: ``weights_only=True`` accepts tensors and plain
    Python containers and numbers only, so a crafted checkpoint.pt or deployed.pt shared by
    someone else raises instead of executing (checkpoints are written to fit this)."""
    return torch.load(path, map_location=device, weights_only=True)
