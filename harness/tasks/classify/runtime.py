"""Classification, the torch side: cross-entropy, accuracy (%), the epoch line."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.dist import Dist
from harness.tasks.classify import Classify, loader, models
from harness.tasks.classify import data as classify_data
from harness.tasks.runtime import TaskRuntime, autocast


@torch.no_grad()
def evaluate(model: nn.Module, data, cfg, device: torch.device,
             dist: Dist = Dist(), split: str = "test") -> tuple[float, float]:
    """(mean loss, accuracy %) on the test set (``split="val"``: the validation split), in
    the model's current (deployed or not) state.

    With several ranks each evaluates every world-th batch and the sums are all-reduced."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n = torch.zeros((), device=device, dtype=torch.int64)
    batches = data.val_batches if split == "val" else data.test_batches
    for i, (x, y) in enumerate(batches(cfg.data.eval_batch_size)):
        if i % dist.world != dist.rank:
            continue
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(cfg, device):
            out = model(x)
        loss += F.cross_entropy(out.float(), y, reduction="sum").double()
        correct += (out.argmax(1) == y).sum()
        n += len(y)
    dist.all_sum(loss, correct, n)
    model.train(was_training)
    return float(loss) / int(n), 100.0 * int(correct) / int(n)


class ClassifyRuntime(TaskRuntime):
    card = Classify
    models = models.MODELS
    datasets = classify_data.describe_datasets()
    has_val_split = True

    def default_augment(self, data_name: str) -> bool:
        return classify_data.default_augment(data_name)

    def check_root(self, cfg) -> None:
        classify_data.check_root(cfg.data)

    def load_data(self, cfg, device):
        return loader.load(cfg.data, device)

    def loss(self, out, y, cfg):
        return F.cross_entropy(out.float(), y, label_smoothing=cfg.optim.label_smoothing)

    def new_sums(self, device):
        sums = super().new_sums(device)
        sums["correct"] = torch.zeros((), dtype=torch.int64, device=device)
        return sums

    def accumulate(self, sums, loss, total, out, y):
        super().accumulate(sums, loss, total, out, y)
        sums["correct"] += (out.argmax(1) == y).sum()

    def train_stats(self, sums):
        return {**super().train_stats(sums),
                "train_acc": 100.0 * int(sums["correct"]) / int(sums["n"])}

    def evaluate(self, model, data, cfg, device, dist):
        loss, acc = evaluate(model, data, cfg, device, dist)
        return {"test_loss": loss, "test_acc": acc}

    def evaluate_val(self, model, data, cfg, device, dist):
        loss, acc = evaluate(model, data, cfg, device, dist, split="val")
        return {"val_loss": loss, "val_acc": acc}

    def summary_fields(self, rows, final, data) -> dict[str, Any]:
        return {"final_test_acc": None if final is None else final["test_acc"]}

    def epoch_line(self, row, epochs):
        extra = " ".join(f"{k}={v:.4g}" for k, v in row.items()
                         if k not in self.card.columns and isinstance(v, (int, float)))
        return (f"epoch {row['epoch']}/{epochs} loss {row['train_loss']:.4f} "
                f"train {row['train_acc']:.2f}% test {row['test_acc']:.2f}% lr {row['lr']:.4g} "
                f"{row['epoch_time_s']:.1f}s {extra}").rstrip()

    def result_text(self, final):
        return f"final deployed test acc {final['test_acc']:.2f}%"


RUNTIME = ClassifyRuntime()
