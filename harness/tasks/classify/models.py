"""Classification networks, each one :class:`harness.tasks.models.Model` entry of ``MODELS``.

A factory builds a plain float network from (num_classes, in_channels, image_size, width,
act); the quantization policy (harness/tasks/models.py) then picks the layers a method takes
over.

ResNet-20 options: ``model.block`` = ``standard`` (He et al.: conv-BN-act, conv-BN, add, act)
or ``convprelubn``, our reading of the SLB README's ``--basic_block_type=convprelubn`` (the
official code was never released, so it is an assumption: each conv followed by a per-channel
PReLU and then BN, conv-PReLU-BN twice, then the shortcut is added with no activation after
the sum; the stem stays conv-BN-act); ``model.shortcut`` = ``A`` (identity; where the shape
changes, stride-2 subsampling and zero channels padded on both sides, no parameters: He et al.'s
CIFAR choice, 0.27 M parameters) or ``B`` (a 1x1 projection conv + BN where the shape changes;
the default, as before these options existed).
``bireal_resnet18``: Bi-Real Net ResNet-18 (Liu et al., ECCV 2018, and its PyTorch code): a
real-valued shortcut around every 3x3 conv (16 units of conv-BN + shortcut, 4 per stage,
widths 64-128-256-512 x width), downsampling shortcuts AvgPool(2)-conv1x1-BN, stem conv7x7-BN-
maxpool. Binary activations come from the recipe's activation quantizer on each quantized
conv's input; ``standard`` applies the network nonlinearity before each conv (Hardtanh at
a_bits = 1, so sign(hardtanh(x)) = sign(x); ReLU otherwise) and ``convprelubn`` a PReLU
between conv and BN, as in the SLB README's ImageNet command.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import require
from harness.tasks.models import Model


def _c(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


# --------------------------------------------------------------------------- ResNet-20

BLOCKS = ("standard", "convprelubn")
SHORTCUTS = ("A", "B")


class PadShortcut(nn.Module):
    """He et al.'s option A: identity; where the shape changes, subsample by the stride and
    pad the new channels with zeros on both sides (no parameters)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride, self.lo, self.hi = stride, (cout - cin) // 2, cout - cin - (cout - cin) // 2

    def forward(self, x):
        return F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.lo, self.hi))


def _shortcut(cin: int, cout: int, stride: int, kind: str) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    if kind == "A":
        return PadShortcut(cin, cout, stride)
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),  # option B, He et al.
                         nn.BatchNorm2d(cout))                            # 2016, sec. 3.3


class BasicBlock(nn.Module):
    """standard: act(BN(conv(act(BN(conv(x))))) + s(x)); convprelubn: BN(PReLU(conv(BN(PReLU(
    conv(x)))))) + s(x) (see the module docstring). Submodule names are the same for both."""

    def __init__(self, cin: int, cout: int, stride: int, act: type[nn.Module],
                 block: str = "standard", shortcut: str = "B"):
        super().__init__()
        self.prelu = block == "convprelubn"
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = nn.PReLU(cout) if self.prelu else act()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride, shortcut)
        self.act2 = nn.PReLU(cout) if self.prelu else act()

    def forward(self, x):
        if self.prelu:
            out = self.bn1(self.act1(self.conv1(x)))
            return self.bn2(self.act2(self.conv2(out))) + self.shortcut(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al. 2016 CIFAR ResNet (6n+2 layers; n=3 is ResNet-20), widths 16-32-64."""

    def __init__(self, n: int, num_classes: int, in_channels: int, width: float, act,
                 block: str = "standard", shortcut: str = "B"):
        super().__init__()
        widths = [_c(16, width), _c(32, width), _c(64, width)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = act()
        blocks, cin = [], widths[0]
        for stage, cout in enumerate(widths):
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(cin, cout, stride, act, block, shortcut))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.layers(self.act1(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet20(num_classes, in_channels, image_size, width, act, block="standard", shortcut="B"):
    return CifarResNet(3, num_classes, in_channels, width, act, block, shortcut)


# --------------------------------------------------------------------------- VGG-Small

def vgg_small(num_classes, in_channels, image_size, width, act):
    """VGG-Small of LQ-Nets / SLB: 128-128-M-256-256-M-512-512-M-FC.

    conv -> (maxpool) -> BN -> act, pooling before BN as in the binary-network ports, so a
    max over binary activations is never taken.
    """
    cfg = [128, 128, "M", 256, 256, "M", 512, 512, "M"]
    layers: list[nn.Module] = []
    cin = in_channels
    for i, v in enumerate(cfg):
        if v == "M":
            continue
        cout = _c(v, width)
        layers.append(nn.Conv2d(cin, cout, 3, 1, 1, bias=False))
        if i + 1 < len(cfg) and cfg[i + 1] == "M":
            layers.append(nn.MaxPool2d(2))
        layers += [nn.BatchNorm2d(cout), act()]
        cin = cout
    h, w = (s // 8 for s in image_size)
    require(h >= 1 and w >= 1, "model.name",
            f"vgg_small needs images of at least 8x8, got {image_size}")
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * h * w, num_classes))


# --------------------------------------------------------------------------- small CNN

def small_cnn(num_classes, in_channels, image_size, width, act):
    """A four-conv network for digits/MNIST-sized inputs (CPU tests and the demo)."""
    c1, c2, c3 = _c(32, width), _c(64, width), _c(128, width)
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, 3, 1, 1, bias=False), nn.BatchNorm2d(c1), act(),
        nn.Conv2d(c1, c2, 3, 1, 1, bias=False), nn.BatchNorm2d(c2), act(), nn.MaxPool2d(2),
        nn.Conv2d(c2, c3, 3, 1, 1, bias=False), nn.BatchNorm2d(c3), act(), nn.MaxPool2d(2),
        nn.Conv2d(c3, c3, 3, 1, 1, bias=False), nn.BatchNorm2d(c3), act(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c3, num_classes))


# --------------------------------------------------------------------------- ResNet-18

def resnet18(num_classes, in_channels, image_size, width, act):
    """torchvision's ImageNet ResNet-18 (its ReLUs replaced by ``act``)."""
    from torchvision.models import resnet18 as tv_resnet18

    model = tv_resnet18(num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    if act is not nn.ReLU:
        for parent in list(model.modules()):
            for name, child in parent.named_children():
                if isinstance(child, nn.ReLU):
                    setattr(parent, name, act())
    return model


# --------------------------------------------------------------------------- Bi-Real ResNet-18

class BiRealUnit(nn.Module):
    """One 3x3 conv with its own real-valued shortcut: BN(f(conv(g(x)))) + s(x), with g the
    network nonlinearity and f the identity (standard), or g the identity and f a PReLU
    (convprelubn); s the identity, or AvgPool(2)-conv1x1-BN where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, act: type[nn.Module], block: str):
        super().__init__()
        prelu = block == "convprelubn"
        self.pre = nn.Identity() if prelu else act()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.act = nn.PReLU(cout) if prelu else nn.Identity()
        self.bn = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            # ceil_mode: the same as Bi-Real's pooling on even sizes, and odd ones (small
            # test images) keep their last row and column instead of failing
            self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride, ceil_mode=True),
                                          nn.Conv2d(cin, cout, 1, 1, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.bn(self.act(self.conv(self.pre(x)))) + self.shortcut(x)


def bireal_resnet18(num_classes, in_channels, image_size, width, act, block="standard"):
    """Bi-Real Net ResNet-18: stem, 4 stages x 4 units (16 3x3 convs), pool, FC."""
    widths = [_c(c, width) for c in (64, 128, 256, 512)]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False),
                               nn.BatchNorm2d(widths[0]), nn.MaxPool2d(3, 2, 1)]
    cin = widths[0]
    for stage, cout in enumerate(widths):
        for i in range(4):
            layers.append(BiRealUnit(cin, cout, 2 if (stage > 0 and i == 0) else 1, act, block))
            cin = cout
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(cin, num_classes))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


# --------------------------------------------------------------------------- registry

MODELS: dict[str, Model] = {m.name: m for m in (
    Model("resnet20", "CIFAR ResNet-20 (He et al. 2016), widths 16-32-64 x width; options "
          "block, shortcut", resnet20, options=("block", "shortcut")),
    Model("vgg_small", "VGG-Small of LQ-Nets/SLB: 128-128-M-256-256-M-512-512-M-FC, "
          "images of at least 8x8", vgg_small),
    Model("resnet18", "torchvision's ImageNet ResNet-18 (width 1.0 only)", resnet18),
    Model("bireal_resnet18", "Bi-Real Net ResNet-18 (a shortcut around every 3x3 conv, SLB's "
          "ImageNet model); option block", bireal_resnet18, options=("block",)),
    Model("small_cnn", "a four-conv network for digits/MNIST-sized inputs (tests and the demo)",
          small_cnn),
)}
