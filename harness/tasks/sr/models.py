"""Super-resolution networks, each one :class:`harness.tasks.models.Model` entry of ``MODELS``.

Every factory takes (num_classes = output channels, in_channels, image_size, width, act,
scale, blocks) and maps an LR image in [0, 1] to the HR estimate; ``width`` multiplies the 64
feature channels and ``blocks`` (``sr.blocks``, 0 = the paper's 16) sets the depth, the knobs
for CPU runs. Inputs are centred with DIV2K's RGB mean and the mean is added back at the
output, as EDSR does (fixed, not trained; for SRResNet too, which normalised differently).

Architectures (from the papers as commonly re-implemented, e.g. the EDSR authors' PyTorch
code; the papers' PDFs could not be re-read offline):

- ``edsr_baseline``, Lim et al. 2017 (EDSR, the baseline model: 16 blocks, 64 channels, no
  batch normalization, residual scaling 1): head conv3x3 -> B x [conv3x3, ReLU, conv3x3, + x]
  -> conv3x3, + head output -> upsampler (x2/x4: log2(s) x [conv3x3 to 4F, PixelShuffle(2)];
  x3: conv3x3 to 9F, PixelShuffle(3)) -> conv3x3 to RGB.
- ``srresnet``, Ledig et al. 2017 (SRResNet, 16 blocks, 64 channels, with batch
  normalization): head conv9x9 + PReLU -> B x [conv3x3, BN, PReLU, conv3x3, BN, + x] ->
  conv3x3, BN, + head output -> upsampler (log2(s) x [conv3x3 to 4F, PixelShuffle(2), PReLU];
  x3: one conv to 9F, PixelShuffle(3), PReLU) -> conv9x9 to RGB.

Nonlinearity: ``act`` from the recipe (harness: ReLU, or Hardtanh with 1-bit activations);
SRResNet uses PReLU where the recipe says ReLU, as its paper.

Quantization policy, following the binary-SR papers (Ma et al. 2019, "Efficient Super
Resolution Using Binarized Neural Network": "we binarize the convolutional filters in only
residual blocks"; later binary SR work keeps head, upsampler and tail in full precision too):
the convolutions inside the residual blocks are handed to the method; the head
(``policy_first``, quantized with model.quantize_first=true) and the body's closing conv, the
upsampler and the tail (``policy_last``, with model.quantize_last=true) stay full precision.
Whether later papers also quantize the body's closing conv could not be verified; here it
follows Ma et al. literally (not quantized).

SLB's State BN needs BN layers: SRResNet has them (each gets its quantized statistics);
EDSR-baseline has none, so every SLB ``bn`` mode is the same network there (``bn=sbn`` only
spends one extra forward per step; tests/test_sr.py checks the runs are identical) and the SR
studies set ``bn = "none"`` for SLB on EDSR.

Not provided: VDSR (Kim et al. 2016: 20 conv layers on the bicubic-upscaled image); its input
is the upscaled image, which the SR data pipeline does not produce.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from harness.tasks.models import Model

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)  # EDSR's RGB mean of DIV2K


def _c(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, 1, k // 2)


class _MeanShift(nn.Module):
    """x - mean at the input, x + mean at the output (fixed buffer, not in the state dict)."""

    def __init__(self, sign: float):
        super().__init__()
        self.register_buffer("mean", sign * torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x):
        return x + self.mean


def _upsampler(feats: int, scale: int, act: type[nn.Module] | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    if scale & (scale - 1) == 0:
        for _ in range(int(math.log2(scale))):
            layers += [_conv(feats, 4 * feats), nn.PixelShuffle(2)] + ([act()] if act else [])
    elif scale == 3:
        layers += [_conv(feats, 9 * feats), nn.PixelShuffle(3)] + ([act()] if act else [])
    else:
        raise ValueError(f"scale {scale} not supported")
    return nn.Sequential(*layers)


class _SrNet(nn.Module):
    """head -> residual blocks -> closing conv (+ head) -> upsampler -> tail."""

    policy_first = ("head",)
    policy_last = ("body_end", "upsampler", "tail")

    def forward(self, x):
        x = self.head(self.sub_mean(x))
        res = self.body_end(self.blocks(x)) + x
        return self.add_mean(self.tail(self.upsampler(res)))


class EdsrBlock(nn.Module):
    def __init__(self, feats: int, act: type[nn.Module]):
        super().__init__()
        self.conv1, self.act, self.conv2 = _conv(feats, feats), act(), _conv(feats, feats)

    def forward(self, x):
        return x + self.conv2(self.act(self.conv1(x)))


class EdsrBaseline(_SrNet):
    def __init__(self, out_channels: int, in_channels: int, width: float, act, scale: int,
                 blocks: int):
        super().__init__()
        f = _c(64, width)
        self.sub_mean, self.add_mean = _MeanShift(-1.0), _MeanShift(1.0)
        self.head = _conv(in_channels, f)
        self.blocks = nn.Sequential(*[EdsrBlock(f, act) for _ in range(blocks or 16)])
        self.body_end = _conv(f, f)
        self.upsampler = _upsampler(f, scale, None)
        self.tail = _conv(f, out_channels)


class SrResBlock(nn.Module):
    def __init__(self, feats: int, act: type[nn.Module]):
        super().__init__()
        self.conv1, self.bn1, self.act = _conv(feats, feats), nn.BatchNorm2d(feats), act()
        self.conv2, self.bn2 = _conv(feats, feats), nn.BatchNorm2d(feats)

    def forward(self, x):
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class SrResNet(_SrNet):
    def __init__(self, out_channels: int, in_channels: int, width: float, act, scale: int,
                 blocks: int):
        super().__init__()
        act = nn.PReLU if act is nn.ReLU else act
        f = _c(64, width)
        self.sub_mean, self.add_mean = _MeanShift(-1.0), _MeanShift(1.0)
        self.head = nn.Sequential(_conv(in_channels, f, 9), act())
        self.blocks = nn.Sequential(*[SrResBlock(f, act) for _ in range(blocks or 16)])
        self.body_end = nn.Sequential(_conv(f, f), nn.BatchNorm2d(f))
        self.upsampler = _upsampler(f, scale, act)
        self.tail = _conv(f, out_channels, 9)


def edsr_baseline(num_classes, in_channels, image_size, width, act, scale=2, blocks=0):
    return EdsrBaseline(num_classes, in_channels, width, act, scale, blocks)


def srresnet(num_classes, in_channels, image_size, width, act, scale=2, blocks=0):
    return SrResNet(num_classes, in_channels, width, act, scale, blocks)


MODELS: dict[str, Model] = {m.name: m for m in (
    Model("edsr_baseline", "SR: EDSR baseline (Lim et al. 2017), 16 blocks x 64 channels "
          "x model.width, no BN (task sr)", edsr_baseline, task_options=("scale", "blocks")),
    Model("srresnet", "SR: SRResNet (Ledig et al. 2017), 16 blocks x 64 channels x "
          "model.width, with BN (task sr)", srresnet, task_options=("scale", "blocks")),
)}
