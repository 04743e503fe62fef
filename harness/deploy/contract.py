"""What a deployed classifier takes and gives: the input contract every export carries.

The contract (``deployed.pt["input"]``, ``deployed_packed.zip`` meta.json ``"input"``, the ONNX
file's ``metadata_props``, and the lines `export` prints):

- **input**: ``uint8`` images, ``NCHW`` (batch, channels, height, width), values 0..255,
  channels in RGB order (one channel for grayscale data), exactly as PIL decodes them
  (``np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1)``; 16-bit images as
  ``round(v * 255 / 65535)``, harness/tasks/images.py); ``height`` x ``width``
  is the training images' size; ImageNet-size folders (streamed) first take torchvision's
  ``Resize(256)`` and ``CenterCrop(224)`` (``preprocess``);
- **normalisation**, inside the ONNX graph: ``(x / 255 - mean) / std`` per channel, with the
  training set's per-channel ``mean`` and ``std`` (of the images in [0, 1]; for streamed
  folders ImageNet's constants), the same arithmetic as the harness's data pipeline, so the
  ONNX file on raw images gives the harness's accuracy;
- **output**: ``logits`` [N, classes]; ``classes`` names them in order (label i =
  ``classes[i]``: folder names for image folders, the dataset's label names otherwise);
- **bits**: ``w_bits``/``a_bits`` of the run and each quantized layer's weight bits.

The deployed.pt network itself (``export.rebuild_model``) takes normalised float input, as
training did: ``normalize`` here is that step.
"""
from __future__ import annotations

import json
from typing import Any, Iterator

import torch
from torch import nn

DTYPE, LAYOUT, RANGE = "uint8", "NCHW", [0, 255]
# torchvision's evaluation transforms of a streamed (ImageNet-size) folder, before the contract
STREAMED_PREPROCESS = "Resize(256) (shorter side), CenterCrop(224), as torchvision"


def input_contract(data, cfg, layers: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The contract of a classification run's deployed network (None for data without a
    per-channel normalisation, e.g. super-resolution, whose input is already [0, 1])."""
    mean, std = getattr(data, "mean", None), getattr(data, "std", None)
    if mean is None or std is None:
        return None
    c, (h, w) = int(data.in_channels), tuple(int(v) for v in data.image_size)
    return {"dtype": DTYPE, "layout": LAYOUT, "range": list(RANGE),
            "shape": ["N", c, h, w], "channels": "RGB" if c == 3 else f"{c} (grayscale)"
            if c == 1 else str(c),
            "mean": [float(v) for v in torch.as_tensor(mean).flatten()],
            "std": [float(v) for v in torch.as_tensor(std).flatten()],
            "normalize": "(x / 255 - mean) / std per channel, inside the ONNX graph",
            "preprocess": STREAMED_PREPROCESS if getattr(data, "streamed", False) else "none",
            "classes": [str(k) for k in data.classes],
            "output": "logits [N, classes]",
            "w_bits": int(cfg.w_bits), "a_bits": int(cfg.a_bits),
            "layer_bits": {name: int(e.get("bits", 32)) for name, e in layers.items()}}


def lines(contract: dict[str, Any]) -> list[str]:
    """The contract in words, as `export` prints it."""
    _, c, h, w = contract["shape"]
    classes = contract["classes"]
    shown = ", ".join(classes[:10]) + (f", ... ({len(classes)} in all)" if len(classes) > 10
                                       else "")
    pre = contract["preprocess"]
    return [f"input contract: {contract['dtype']} images [N, {c}, {h}, {w}] ({contract['layout']}"
            f", channels {contract['channels']}), values 0..255"
            + (f", after {pre}" if pre != "none" else "") + "; the ONNX graph normalises them "
            f"itself: (x / 255 - mean) / std, mean {_round(contract['mean'])}, std "
            f"{_round(contract['std'])}",
            f"output: logits [N, {len(classes)}]; classes in order: {shown}; weights "
            f"W{contract['w_bits']}/A{contract['a_bits']}"]


def _round(v: list[float]) -> str:
    return "[" + ", ".join(f"{x:.4f}" for x in v) + "]"


def metadata(contract: dict[str, Any]) -> dict[str, str]:
    """The ONNX file's metadata_props: every field as a string (JSON for lists and tables),
    and the whole contract under ``slbench.input``."""
    out = {k: v if isinstance(v, str) else json.dumps(v) for k, v in contract.items()}
    return {**out, "slbench.input": json.dumps(contract, sort_keys=True)}


class RawInput(nn.Module):
    """The deployed network behind the contract's normalisation: uint8 NCHW in, logits out."""

    def __init__(self, net: nn.Module, contract: dict[str, Any]):
        super().__init__()
        self.net = net
        shape = (1, -1, 1, 1)
        self.register_buffer("mean", torch.tensor(contract["mean"]).reshape(shape))
        self.register_buffer("std", torch.tensor(contract["std"]).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(normalize(x, self.mean, self.std))


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images to the network's input: the harness's own arithmetic (InMemoryData)."""
    return (x.float() / 255.0 - mean) / std


def raw_test_batches(data, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The test set as the contract's raw uint8 images (on the CPU) with their labels."""
    if hasattr(data, "x_test"):
        for i in range(0, data.num_test, batch_size):
            yield data.x_test[i: i + batch_size].cpu(), data.y_test[i: i + batch_size].cpu()
        return
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                             transforms.PILToTensor()])
    ds = datasets.ImageFolder(data.test_set.root, tf, loader=data.test_set.loader)
    yield from DataLoader(Subset(ds, data.test_idx.tolist()), batch_size=batch_size)
