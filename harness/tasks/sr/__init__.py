"""Super-resolution (task = "sr"): L1 (or MSE) on [0, 1] pixels, whole-image PSNR/SSIM on Y
with a ``scale``-pixel border. Data (HR images, MATLAB-style bicubic LR, patches:
harness/tasks/sr/data.py), networks (models.py) and metrics (metrics.py) are its own; its
config section is ``[sr]`` (:class:`SrOptions`). Its records: metrics.csv has the card's
``columns``; summary.json ``task`` = "sr", ``metric`` = "test_psnr", ``final_metric``,
``best_metric`` and ``final_metrics`` (every final test column and the bicubic floor)."""
from __future__ import annotations

from dataclasses import dataclass

from harness.config import opt
from harness.tasks.base import Metric, Task, register_task


@dataclass(frozen=True)
class SrOptions:
    """Super-resolution keys (``sr.*``; left out of a classification run's records)."""
    scale: int = opt(2, "upscaling factor", choices=(2, 3, 4))
    patch_size: int = opt(96, "HR training patch side in pixels (LR: patch_size / scale)",
                          lo=2, hi=4096)
    repeat: int = opt(1, "random patches per training image per epoch", lo=1, hi=10**4)
    blocks: int = opt(0, "residual blocks of the SR network; 0 = the paper's 16", lo=0,
                      hi=1000)
    loss: str = opt("l1", "training loss: l1 (EDSR) or mse (SRResNet)", choices=("l1", "mse"))


@register_task
class SuperResolution(Task):
    name = "sr"
    description = "super-resolution: L1/MSE training, PSNR and SSIM on Y of the deployed network"
    Options = SrOptions
    columns = ("epoch", "train_loss", "test_loss", "test_psnr", "test_ssim", "lr",
               "epoch_time_s", "samples_per_s")
    metrics = (Metric("test_psnr", "test PSNR", "dB"),
               Metric("test_ssim", "test SSIM", "", (-1.0, 1.0), digits=4))
    runtime_module = "harness.tasks.sr.runtime"
