"""The selftest's packing section: how many runs to put on one device at once
(``[executor] runs_per_gpu``). K processes train the same network at the same time, each on
the selftest's data, and their summed images per second is measured for K = 1, 2, 4, 8; the
suggestion is the smallest K within ``SUGGEST_WITHIN`` of the best throughput (more runs per
device than that only add memory and contention).

One process: ``worker(CONFIG.json, STEPS, FOLDER, RANK)``, started by :func:`measure`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PACKING_KS = (1, 2, 4, 8)
SUGGEST_WITHIN = 0.05   # a K within 5% of the best aggregate throughput is enough
WARMUP_STEPS = 3
START_TIMEOUT_S = 600


def measure(cfg_path: Path, k: int, steps: int, folder: Path, env: dict[str, str]) -> dict:
    """K processes at once; each warms up, waits for the others, times ``steps`` training
    steps. Returns the aggregate images/s (all processes' images over the slowest one's
    time) and each process's own figure."""
    folder.mkdir(parents=True, exist_ok=True)
    code = ("import sys; from harness.tools.selftest.packing import worker; "
            "sys.exit(worker(*sys.argv[1:5]))")
    ps = [subprocess.Popen([sys.executable, "-c", code, str(cfg_path), str(steps), str(folder),
                            str(r)], env=env) for r in range(k)]
    deadline = time.monotonic() + START_TIMEOUT_S
    while sum((folder / f"ready{r}").exists() for r in range(k)) < k:
        if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in ps):
            for p in ps:
                p.kill()
            raise RuntimeError(f"the {k} packing processes did not all start")
        time.sleep(0.05)
    (folder / "go").write_text("")
    codes = [p.wait() for p in ps]
    if any(codes):
        raise RuntimeError(f"packing processes exited with {codes}")
    each = [json.loads((folder / f"result{r}.json").read_text()) for r in range(k)]
    images = sum(e["images"] for e in each)
    slowest = max(e["seconds"] for e in each)
    return {"k": k, "images_per_s": images / slowest,
            "per_process_images_per_s": [e["images"] / e["seconds"] for e in each]}


def suggest(rows: list[dict[str, Any]]) -> int:
    """The smallest K whose aggregate throughput is within SUGGEST_WITHIN of the best."""
    best = max(r["images_per_s"] for r in rows)
    return min(r["k"] for r in rows if r["images_per_s"] >= (1 - SUGGEST_WITHIN) * best)


def worker(cfg_path: str, steps: str, folder: str, rank: str) -> int:
    """One process: build the run's trainer on its data, warm up, wait for 'go', time the
    steps (device synchronised), write its images and seconds."""
    from harness import files
    from harness.run import resolve
    from harness.run.trainer import Trainer
    from methods.base import Progress

    cfg = resolve.build(cfg_path)
    t = Trainer(cfg, Path(folder) / f"run{rank}", echo=lambda line: None)
    t.build()
    batches = iter(())

    def step(i: int) -> int:
        nonlocal batches
        x, y = next(batches, (None, None))
        if x is None:
            batches = iter(t.data.train_batches(cfg.batch_size, t.gen))
            x, y = next(batches)
        t.step(x, y, Progress(0, cfg.epochs, i, t.steps_per_epoch))
        return len(y)

    for i in range(WARMUP_STEPS):
        step(i)
    files.atomic_write_text(Path(folder) / f"ready{rank}", "")
    while not (Path(folder) / "go").exists():
        time.sleep(0.01)
    t0 = t.clock()
    images = sum(step(WARMUP_STEPS + i) for i in range(int(steps)))
    seconds = t.clock() - t0
    files.atomic_write_json(Path(folder) / f"result{rank}.json",
                            {"images": images, "seconds": seconds, "pid": os.getpid()})
    return 0

