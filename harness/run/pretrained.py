"""Pretraining as a stage: a run that starts from a full-precision run's weights
(``init.source``). The source must be a completed fp run of the same model; the method maps its
weights to its own latent state (methods/base.py: Method.init_from_fp, fp_quantizer,
calibrate_from_fp). Nothing here runs on a missing input: a source that is not (yet) completed
is a one-line error before any training."""
from __future__ import annotations

from pathlib import Path

import torch

from harness import records
from harness.errors import UserError, require
from harness.run import checkpoint


def source_dir(run_dir: Path, source: str) -> Path:
    """The source's run directory: a path as given, or a plain run id (what a study records)
    beside ``run_dir`` in the same study's runs/."""
    return Path(source) if "/" in source else Path(run_dir).parent / source


def load_source(run_dir: Path, source: str, device: torch.device) -> dict[str, torch.Tensor]:
    """The model state of the completed full-precision run ``source`` (weights only, checked
    to be the checkpoint of that run's own config)."""
    path = source_dir(run_dir, source)
    rec = records.load_run(path, with_metrics=False)
    state = rec.status if not rec.problem else f"corrupt ({rec.problem})"
    require(rec.status == "completed", "init.source",
            f"{path} is {state}; the run it starts from must be completed first")
    method = (rec.config.get("method") or {}).get("name")
    require(method == "fp", "init.source",
            f"{path} is a {method} run; start from a full-precision (fp) run")
    try:
        ck = checkpoint.load_tensors(path / "checkpoint.pt", device)
    except Exception as e:  # missing, unreadable or not weights-only: never run it
        raise UserError("init.source", f"cannot read {path / 'checkpoint.pt'} "
                        f"({type(e).__name__}); the source's checkpoint is needed") from None
    require(isinstance(ck, dict) and ck.get("config_hash") == rec.config["config_hash"]
            and isinstance(ck.get("model"), dict), "init.source",
            f"{path / 'checkpoint.pt'} is not the checkpoint of that run's config")
    return ck["model"]
