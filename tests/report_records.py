"""Run records for the report tests, written as the trainer writes them (harness/records.py's
writers and RunSummary, config.json from harness.config.to_dict), so the report is tested
against the contract and not against the benchmark's synthetic-data helper.

``write_run`` writes one run: its test accuracy climbs 2 points per epoch to ``acc`` at the
last epoch (``final - 2 * (epochs - e)``), every epoch takes ``epoch_time`` seconds.
"""
from __future__ import annotations

from pathlib import Path

from harness import config, files, records
from harness.run import resolve
from methods.base import get as get_method


def write_run(root: Path, run_id: str, *, method: str, acc: float | None, w: int = 1,
              a: int = 32, epochs: int = 4, seed: int = 0, variant: str = "",
              options: dict | None = None, status: str = "completed", rows: int | None = None,
              unmatched: bool = False, epoch_time: float = 1.0, slb_scalars: bool = False,
              model: str = "resnet20", dataset: str = "cifar10", error: str = "",
              manifest: list | None = None, method_info: dict | None = None,
              device: str = "cpu", device_name: str = "cpu: test (2 threads)",
              curve: list[float] | None = None, study: str = "",
              fingerprint: bool = False) -> Path:
    """One run record. ``method_info`` defaults to the method's own declaration, as the
    trainer records it (``{}``: a record written before runs recorded it); ``curve`` replaces
    the per-epoch test accuracies; ``fingerprint``: record what the seed controlled as the
    trainer does (the data order depends on the seed alone, the starting network on the
    method and seed), else nothing, as records written before runs recorded it."""
    cfg = config.RunConfig(method=method, method_options=dict(options or {}), w_bits=w, a_bits=a,
                      epochs=epochs, seed=seed, model=config.ModelConfig(name=model),
                      data=config.DataConfig(name=dataset),
                      meta=config.MetaConfig(study=study or root.name, variant=variant,
                                             scale="test", unmatched=unmatched))
    d = config.to_dict(cfg)
    d["config_hash"] = resolve.config_hash(cfg)
    run = root / "runs" / run_id
    files.atomic_write_json(run / "config.json", d)
    n = epochs if rows is None else rows
    final = acc if acc is not None else 50.0
    metric_rows = []
    for e in range(1, n + 1):
        r = {"epoch": e, "train_loss": 1.0 / e, "train_acc": 50.0, "test_loss": 1.0 / e,
             "test_acc": curve[e - 1] if curve else final - 2.0 * (epochs - e), "lr": 0.1,
             "epoch_time_s": epoch_time,
             "samples_per_s": 1000.0 / epoch_time}
        if slb_scalars:
            r.update({"inv_temperature": 1.05 ** e, "temperature": 1.05 ** -e,
                      "quant_gap": 1.0 / e, "flip_ratio": 0.01, "entropy": 0.5,
                      "test_acc_continuous": r["test_acc"] + 1.0})
        metric_rows.append(r)
    records.write_metrics(run, metric_rows)
    if method_info is None:
        method_info = get_method(method).info()
    summ = records.RunSummary(
        status=status, final_test_acc=acc if status == "completed" else None,
        best_test_acc=final, epochs_completed=n, epochs=epochs,
        wall_time_s=epoch_time * n, mean_epoch_time_s=epoch_time,
        peak_mem_mb=500.0, peak_mem_kind="cpu_peak_rss", param_bytes=4000,
        method_param_bytes=2000 * (2 if method == "slb" else 1),
        optimizer_state_bytes=4000,
        method_optimizer_state_bytes=2000 * (2 if method == "slb" else 1),
        config_hash=d["config_hash"],
        env={"python": "3.11.7", "torch": "2.14.1", "device": device,
             "device_name": device_name, "harness_commit": "abc1234",
             "hostname": "h"},
        method_info=method_info, error=error,
        seed_fingerprint={"data_order": f"order-{seed}", "init": f"{method}-{seed}"}
        if fingerprint else {})
    records.write_summary(run, summ)
    if manifest is not None:
        manifest.append({"run_id": run_id, "variant": variant or method, "method": method,
                         "w_bits": w, "a_bits": a, "epochs": epochs, "seed": seed,
                         "unmatched": unmatched})
    return run
