"""The selftest's DDP check: two processes against one, on the same batches (the first
gradient, the first loss, the final network and accuracy)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from harness import files
from harness.config import RunConfig
from harness.dist import Dist
from harness.run import checkpoint, resolve
from harness.run.rundir import prepare_run_dir
from harness.tasks.classify.runtime import evaluate as classify_evaluate
from harness.tools.selftest.checks import CUBLAS, Check, floats, recording_trainer

DDP_METHOD = ("slb", 1)
# DDP vs one process (see compare_ddp): each rank normalises its own half of the batch.
DDP_GRAD_RTOL = 1e-3         # DDP's first gradient vs the same halves in one process
DDP_FIRST_LOSS_RTOL = 0.02   # first-step loss vs one process on whole batches (BN only)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pythonpath() -> str:
    """This checkout first, so worker processes import the code under test."""
    root = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + rest if rest else "")


def ddp_worker(argv: list[str]) -> int:
    """One process of the DDP check: train CONFIG into RUN_DIR as rank $RANK of $WORLD_SIZE,
    then save RESULT (losses, final state, accuracies) for the parent to compare."""
    cfg_path, run_dir, result = argv
    cfg = resolve.build(cfg_path)
    dist = Dist.from_env()
    if dist.main:
        prepare_run_dir(Path(run_dir), cfg)
    t = recording_trainer(cfg, Path(run_dir))
    s = t.run_guarded()
    with t.method.deployed(t.model):  # this rank alone, the whole test set
        _, alone = classify_evaluate(t.model, t.data, cfg, t.device)
    checkpoint.save_tensors(Path(result), {
        "rank": dist.rank, "world": dist.world, "status": s.status,
        "final_test_acc": s.final_test_acc, "alone_test_acc": alone, "steps": t.step_count,
        "losses": t.on_step.trace(), "rows": t.rows, "first_grads": t.on_step.first_grads,
        "state": {k: v.detach().cpu() for k, v in t.model.state_dict().items()}})
    return 0


def sharded_first_grads(cfg: RunConfig, data, world: int) -> dict[str, torch.Tensor]:
    """The first step's gradient as ``world`` DDP ranks compute it, in one process: each
    rank's rows (r, r + world, ... of the first batch, as Dist.shard takes them) through
    their own forward (their own BN statistics) and backward, then averaged, as DDP's
    all-reduce does."""
    from methods.base import Progress

    grads = []
    for rank in range(world):
        t = recording_trainer(cfg, Path("/nonexistent-selftest-run"), data)
        t.build()
        t.model.train()
        t.method.on_epoch_start(t.model, t.progress(0))
        x, y = next(iter(t.data.train_batches(cfg.batch_size, t.gen)))
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t.step(x[rank::world], y[rank::world], Progress(0, cfg.epochs, 0, t.steps_per_epoch))
        grads.append(t.on_step.first_grads)
    return {k: sum(g[k] for g in grads) / world for k in grads[0]}


def rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """||a - b|| / ||b|| over all tensors of two gradient dicts with the same keys."""
    num = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in b)
    den = sum(float(b[k].double().pow(2).sum()) for k in b)
    return (num / max(den, 1e-300)) ** 0.5


def compare_ddp(ranks: list[dict], emulated: dict[str, torch.Tensor],
                single: dict[str, Any]) -> list[Check]:
    """What a 2-process run must share with one process:
    - its first gradient (all-reduced, the same on both ranks) equals the gradient one process
      computes for the same global batch when each half goes through its own forward (each
      rank normalises its own half: the trainer has no SyncBatchNorm), to DDP_GRAD_RTOL;
      a rank that took the wrong rows or skipped the all-reduce is off by ~0.7 (measured on
      the CPU: one half's gradient vs the pair's mean);
    - bitwise: both replicas at the end (parameters and buffers); the distributed evaluation
      (each rank a share of the test set, sums all-reduced) equals one process evaluating
      rank 0's final network; the steps per epoch;
    - the run of one process on whole batches: the same number of steps and a first-step
      loss within DDP_FIRST_LOSS_RTOL. Its gradient differs by the BN statistics of 64 vs
      128 images (0.18-0.24 on the CPU test's tiny model) and trajectories then drift apart
      as any two runs do, so epoch losses and accuracies are reported, not compared."""
    r0, r1 = ranks
    out = []
    same_grads = all(torch.equal(r0["first_grads"][k], r1["first_grads"][k])
                     for k in r0["first_grads"])
    rel = rel_diff(r0["first_grads"], emulated)
    out.append(Check("ddp", "first gradient equals one process on the same global batch",
                     "pass" if same_grads and rel <= DDP_GRAD_RTOL else "fail",
                     f"relative difference {rel:.2e} (limit {DDP_GRAD_RTOL:g}) over "
                     f"{len(emulated)} tensors; ranks {'agree' if same_grads else 'DIFFER'}",
                     {"rel_diff": rel, "ranks_agree": same_grads}))
    differ = [k for k in r0["state"] if not torch.equal(r0["state"][k], r1["state"][k])]
    out.append(Check("ddp", "replicas identical", "fail" if differ else "pass",
                     f"{len(differ)} of {len(r0['state'])} tensors differ between the ranks"
                     + (f" ({', '.join(differ[:4])})" if differ else ""),
                     {"tensors": len(r0["state"]), "differing": len(differ)}))
    same_eval = r0["final_test_acc"] == r0["alone_test_acc"] == r1["final_test_acc"]
    out.append(Check("ddp", "distributed evaluation", "pass" if same_eval else "fail",
                     f"2 ranks {r0['final_test_acc']:.2f}% (rank 1 {r1['final_test_acc']:.2f}%)"
                     f", rank 0's network alone {r0['alone_test_acc']:.2f}%"))
    first = float((r0["losses"][0] + r1["losses"][0]) / 2)
    first_single = float(single["losses"][0])
    rel_first = abs(first - first_single) / first_single
    ok = r0["steps"] == single["steps"] and rel_first <= DDP_FIRST_LOSS_RTOL
    out.append(Check(
        "ddp", "one process on whole batches", "pass" if ok else "fail",
        f"{r0['steps']} vs {single['steps']} steps; first-step loss {first:.4f} vs "
        f"{first_single:.4f} ({100 * rel_first:.2f}%, limit {100 * DDP_FIRST_LOSS_RTOL:g}%); "
        f"first gradient differs by {single['grad_rel_diff']:.3f} (BN over halves); epoch "
        f"losses {floats([r['train_loss'] for r in r0['rows']])} vs "
        f"{floats([r['train_loss'] for r in single['rows']])}; final accuracy "
        f"{r0['final_test_acc']:.2f}% vs {single['final_test_acc']:.2f}%",
        {"first_step_loss_rel_diff": rel_first, "grad_rel_diff": single["grad_rel_diff"],
         "ddp_final_acc": r0["final_test_acc"], "single_final_acc": single["final_test_acc"],
         "ddp_epoch_loss": [r["train_loss"] for r in r0["rows"]],
         "single_epoch_loss": [r["train_loss"] for r in single["rows"]]}))
    return out


def rank_line(folder: Path, rank: int, code: int, rec: dict | None) -> str:
    if rec is not None:
        return f"rank {rank}: {rec['status']}, {rec['steps']} steps"
    log = folder / f"rank{rank}.log"
    tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
    return f"rank {rank}: exit {code}" + (f" ({tail[0][:200]})" if tail else "")


def run_ranks(folder: Path, world: int, cpu: bool, timeout: float) -> list[int]:
    """Start ``world`` worker processes as torchrun would (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR/PORT) on folder/config.json; their exit codes (124: killed at ``timeout``)."""
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world),
               "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "PYTHONPATH": pythonpath(), "CUBLAS_WORKSPACE_CONFIG":
                   os.environ.get("CUBLAS_WORKSPACE_CONFIG", CUBLAS)}
        if cpu:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // world))
        cmd = [sys.executable, "-c", "import sys; from harness.tools.selftest.ddp import "
               "ddp_worker; sys.exit(ddp_worker(sys.argv[1:]))", str(folder / "config.json"),
               str(folder / "run"), str(folder / f"rank{rank}.pt")]
        log = files.open_append(folder / f"rank{rank}.log")  # a fresh folder of its own
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT),
                      log))
    deadline = time.monotonic() + timeout
    codes = []
    for p, log in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            codes.append(124)
        log.close()
    return codes
