"""Super-resolution, the torch side: L1/MSE loss, whole-image PSNR/SSIM on Y, the bicubic
floor in the summary, output crops for the report."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from harness import files
from harness.errors import require
from harness.tasks.runtime import TaskRuntime, autocast
from harness.tasks.sr import SuperResolution, models
from harness.tasks.sr import data as sr_data
from harness.tasks.sr.metrics import bicubic_upscale, psnr_y, ssim_y, to_uint8


class SrRuntime(TaskRuntime):
    card = SuperResolution
    models = models.MODELS
    datasets = sr_data.describe_datasets()

    def check(self, cfg) -> None:
        super().check(cfg)
        s = cfg.task_options
        require(s.patch_size >= s.scale and s.patch_size % s.scale == 0, "sr.patch_size",
                f"{s.patch_size} must be a positive multiple of sr.scale={s.scale}, "
                f"e.g. {s.scale * 16}")

    def default_augment(self, data_name: str) -> bool:
        return True  # flips and transposes (EDSR)

    def check_root(self, cfg) -> None:
        sr_data.check_root(cfg.data)

    def load_data(self, cfg, device):
        return sr_data.load(cfg, device)

    def loss(self, out, y, cfg):
        out = out.float()
        return F.l1_loss(out, y) if cfg.task_options.loss == "l1" else F.mse_loss(out, y)

    @torch.no_grad()
    def evaluate(self, model, data, cfg, device, dist):
        """Whole test images one at a time; per test set the mean PSNR/SSIM over its images
        (the primary columns are the first set's; with several sets each set also gets
        test_psnr_<set>, test_ssim_<set>). test_loss: the L1/MSE of the unrounded output,
        averaged over every test image. Ranks share the images and all-reduce the sums."""
        was_training = model.training
        model.eval()
        sums = torch.zeros(len(data.test_sets), 3, dtype=torch.float64, device=device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        i = 0
        for k, (_, items) in enumerate(data.test_sets):
            for t in items:
                i += 1
                if (i - 1) % dist.world != dist.rank:
                    continue
                hr = t.hr[None].float() / 255.0
                with autocast(cfg, device):
                    out = model(t.lr[None].float() / 255.0).float()
                loss_sum += self.loss(out, hr, cfg).double()
                sr = to_uint8(out[0])
                sums[k, 0] += psnr_y(sr, t.hr, data.scale)
                sums[k, 1] += ssim_y(sr, t.hr, data.scale)
                sums[k, 2] += 1
        dist.all_sum(sums, loss_sum)
        model.train(was_training)
        per_set = [(name, float(sums[k, 0] / sums[k, 2]), float(sums[k, 1] / sums[k, 2]))
                   for k, (name, _) in enumerate(data.test_sets)]
        out = {"test_loss": float(loss_sum) / float(sums[:, 2].sum()),
               "test_psnr": per_set[0][1], "test_ssim": per_set[0][2]}
        if len(per_set) > 1:
            for name, p, s in per_set:
                out[f"test_psnr_{name}"], out[f"test_ssim_{name}"] = p, s
        return out

    def summary_fields(self, rows, final, data):
        """The primary score (test PSNR) as ``final_metric``/``best_metric``; in
        ``final_metrics`` every final test column and the bicubic floor of the first test
        set (``bicubic_psnr``, ``bicubic_ssim``, and per set with several)."""
        score = self.card.headline().column
        scores = [r[score] for r in rows] + ([final[score]] if final else [])
        floor = {}
        if data is not None and final:
            sets = list(data.bicubic.items())
            floor = {"bicubic_psnr": sets[0][1]["psnr"], "bicubic_ssim": sets[0][1]["ssim"]}
            if len(sets) > 1:
                for name, b in sets:
                    floor[f"bicubic_psnr_{name}"] = b["psnr"]
                    floor[f"bicubic_ssim_{name}"] = b["ssim"]
        return {"task": self.card.name, "metric": score,
                "final_metric": None if final is None else final[score],
                "best_metric": max(scores) if scores else None,
                "final_metrics": {**(final or {}), **floor}}

    def epoch_line(self, row, epochs):
        extra = " ".join(f"{k}={v:.4g}" for k, v in row.items()
                         if k not in self.card.columns and isinstance(v, (int, float)))
        return (f"epoch {row['epoch']}/{epochs} loss {row['train_loss']:.4f} "
                f"test PSNR {row['test_psnr']:.2f} dB SSIM {row['test_ssim']:.4f} "
                f"lr {row['lr']:.4g} {row['epoch_time_s']:.1f}s {extra}").rstrip()

    def result_text(self, final):
        return (f"final deployed test PSNR {final['test_psnr']:.2f} dB, "
                f"SSIM {final['test_ssim']:.4f} (Y channel)")

    @torch.no_grad()
    def save_samples(self, model, data, run_dir):
        """RUN_DIR/sr_crop.png: the network's output on a CROP x CROP HR-pixel window at
        the centre of the first test image; sr_crop_hr.png and sr_crop_bicubic.png: the same
        window of the HR image and of its bicubic upscaling (for the report's figure)."""
        t = data.test_sets[0][1][0]
        was_training = model.training
        model.eval()
        out = to_uint8(model(t.lr[None].float() / 255.0).float()[0]).cpu()
        model.train(was_training)
        bic = to_uint8(bicubic_upscale(t.lr.cpu(), data.scale))
        h, w = t.hr.shape[-2:]
        c = min(sr_data.CROP, h, w)
        y0, x0 = (h - c) // 2, (w - c) // 2
        for name, img in (("sr_crop", out), ("sr_crop_hr", t.hr.cpu()), ("sr_crop_bicubic", bic)):
            crop = img[:, y0: y0 + c, x0: x0 + c].permute(1, 2, 0).numpy()
            files.atomic_write(Path(run_dir) / f"{name}.png",
                            lambda f, a=crop: Image.fromarray(a).save(f, format="PNG"))


RUNTIME = SrRuntime()
