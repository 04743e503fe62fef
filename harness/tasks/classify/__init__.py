"""Image classification, the default task: cross-entropy training, top-1 accuracy (%) of
the deployed network. Datasets (harness/tasks/classify/data.py) and networks
(harness/tasks/classify/models.py) are its own; its records are the harness's historical
ones (summary.json ``final_test_acc``/``best_test_acc``; config.json holds no task keys)."""
from __future__ import annotations

from harness.tasks.base import Metric, Task, register_task


@register_task
class Classify(Task):
    name = "classify"
    description = "image classification: cross-entropy, top-1 accuracy of the deployed network"
    columns = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr",
               "epoch_time_s", "samples_per_s")
    metrics = (Metric("test_acc", "test accuracy", "%", (0.0, 100.0), short="test acc"),)
    final_field = "final_test_acc"
    best_field = "best_test_acc"
    runtime_module = "harness.tasks.classify.runtime"
