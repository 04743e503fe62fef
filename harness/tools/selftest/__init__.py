"""`python -m harness selftest`: the training path on one device, proven in one command.

    python -m harness selftest --device cuda --data-root DIR        # make gpu-check
    python -m harness selftest --device cpu --dataset digits --model small_cnn --width 0.25 ...

DIR holds CIFAR-10 (the official python pickles) or its JPEG ImageFolder copy; the whole
training set is loaded onto the device once and shared by every run. Sections, in order
(``--skip`` leaves any out, and the summary says so):

  train     every method at W1/A32 and W2/A32 where it supports them (fp at W32), ``--epochs``
            over the training set, under deterministic settings; checks per run that
            - the loss falls: the mean of the last tenth of the steps <= LOSS_FALL x the first's;
            - deployed == export: deployed.pt written by harness.deploy.export, rebuilt from that
              file alone (harness.deploy.export.load_deployed), gives every test image the class the
              trained deployed network gives it, and the run's final accuracy;
            - same seed, same run: a second run agrees bitwise in every step's loss, every
              parameter and buffer, and every metrics row.
  switches  fp and SLB W1 under channels_last, bf16 autocast, and both with torch.compile:
            the loss falls and deployed == export under each.
  epoch     one fp training epoch timed (CUDA events after a warm-up epoch: harness.tools.bench
            time_epochs) with default settings, channels_last, bf16 autocast, both, and all
            three with torch.compile; the GPU target (harness.tools.bench.EPOCH_TARGET_S).
  ratios    harness.tools.bench.run_bench: every method's step time over fp, the ratios and
            targets `python -m harness bench` reports.
  ddp       2 processes (NCCL on a node with 2 or more GPUs, gloo on the CPU) running the
            trainer as torchrun would (RANK/WORLD_SIZE/LOCAL_RANK), against one process with
            the same global batch: the first gradient, the replicas, the distributed
            evaluation (see :func:`compare_ddp` for what must agree, how closely, and why).

Writes OUT/selftest-<time>-<device>/selftest.json and selftest.md (device name, driver,
versions, every check and figure, what was skipped and why; the runs' records beside them)
and exits 1 when any check failed. A check that raises is a failed check with its
traceback in the JSON, never the end of the selftest. Targets (times) are reported PASS/MISS
and never fail it: performance targets live in the benchmark, not in checks.

Determinism on CUDA needs CUBLAS_WORKSPACE_CONFIG=:4096:8 before CUDA starts: the command
sets it (unless already set) before anything touches the GPU.
"""
from __future__ import annotations

import os

import torch

from harness.errors import require
from harness.tools import bench
from harness.tools.selftest.checks import CUBLAS
from harness.tools.selftest.sections import Selftest
from harness.tools.selftest.summary import write


def cmd_selftest(args) -> int:
    """`python -m harness selftest`: exit 0 when every check passed, 1 otherwise."""
    if not torch.cuda.is_initialized():  # cuBLAS reads it when CUDA starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS)
    for name in ("epochs", "timing_epochs", "bench_rounds", "bench_steps", "batch_size",
                 "packing_steps"):
        require(getattr(args, name) >= 1, f"--{name.replace('_', '-')}", "must be >= 1")
    require(all(1 <= k <= 64 for k in args.packing_ks), "--packing-ks",
            "each K must be in [1, 64]")
    require(args.ddp_timeout > 0, "--ddp-timeout", "must be > 0 seconds")
    for name in ("train_images", "test_images"):
        require(getattr(args, name) >= 0, f"--{name.replace('_', '-')}", "must be >= 0")
    bench.check_settings(  # the bench the ratios section runs, and the runs' model settings
        bench.settings(device=args.device, model=args.model, width=args.width,
                       batch_size=args.batch_size, rounds=args.bench_rounds,
                       steps=args.bench_steps, bits=list(args.bench_bits),
                       methods=args.methods), "--bench-bits",
        {"rounds": "--bench-rounds", "steps": "--bench-steps", "batch_size": "--batch-size"})
    st = Selftest(args)
    summary = st.run()
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if cublas != CUBLAS and st.device.type == "cuda":
        summary.notes.append(f"CUBLAS_WORKSPACE_CONFIG is {cublas!r}, not {CUBLAS!r}: cuBLAS "
                             "may not be deterministic")
    js, md = write(summary, st.out)
    failed = summary.failed()
    print(f"selftest: {len(summary.checks) - len(failed)} of {len(summary.checks)} checks "
          f"passed in {summary.wall_s:.0f} s; wrote {js} and {md}")
    for c in failed:
        print(f"FAILED [{c.section}] {c.name}: {c.detail}")
    return 0 if summary.ok else 1
