"""A synthetic study spec of 10^5 runs, for timing its plan (`python -m harness bench --what
spec`): ``synthetic_spec`` writes it (a realistic paper grid on the embedded digits data:
nine variants of five methods, five W/A cells, ten epoch budgets, seeds until ``n_runs``) and
``bench_spec`` times `sweep --dry-run` of it in a fresh process, with that process's peak RSS
(torch and the methods are imported, as in any sweep).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.files import atomic_write_text

SPEC_TARGET_S = 20.0
SPEC_TARGET_MB = 1024.0
SPEC_RUNS = 10**5
CELLS = ((1, 32), (2, 32), (4, 32), (1, 4), (2, 4))
# (variant, method, options, its cells): 40 variant-cells, so 400 runs per seed
VARIANTS = (("slb", "slb", "", CELLS), ("slb-recal-end", "slb", 'bn = "recal_end"', CELLS),
            ("slb-recal-epoch", "slb", 'bn = "recal_epoch"', CELLS),
            ("slb-none", "slb", 'bn = "none"', CELLS),
            ("slb-cos", "slb", 'schedule = "cos"', CELLS),
            ("dorefa", "dorefa", "", CELLS), ("lqnet", "lqnet", "", CELLS),
            ("ste", "ste", 'scaling = "channel"', ((1, 32), (1, 4))),
            ("lsq", "lsq", "", ((2, 32), (4, 32), (2, 4))))
BUDGETS = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)


def synthetic_spec(path: Path, n_runs: int = SPEC_RUNS) -> Path:
    """Write a spec of ``n_runs`` runs (a multiple of its 400 variant x cell x budget
    templates) to ``path``."""
    per_seed = sum(len(cells) for *_, cells in VARIANTS) * len(BUDGETS)
    if n_runs < per_seed or n_runs % per_seed:
        raise ValueError(f"n_runs must be a multiple of {per_seed}, got {n_runs}")
    lines = ['[study]', 'name = "bench-spec"', '[recipe]',
             'model = { name = "small_cnn", width = 0.5 }', 'data = { name = "digits" }',
             'optim = { name = "sgd", lr = 0.05, momentum = 0.9, weight_decay = 5e-4, '
             'schedule = "cosine" }', 'batch_size = 64', 'a_quant = "pact"', 'device = "cpu"',
             '[grid]', f'bits = {[list(c) for c in CELLS]}', f'epochs = {list(BUDGETS)}',
             f'seeds = {list(range(n_runs // per_seed))}']
    for name, method, options, cells in VARIANTS:
        lines += [f'[variants.{name}]', f'method = "{method}"']
        if cells != CELLS:
            lines.append(f'bits = {[list(c) for c in cells]}')
        if options:
            lines.append(f'options = {{ {options} }}')
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)


def bench_spec(n_runs: int = SPEC_RUNS) -> tuple[float, float, str, float]:
    """(wall seconds, peak RSS in MB, its plan's first line, CPU seconds) of `sweep
    --dry-run` over a synthetic spec of ``n_runs`` runs, in a fresh process (so the RSS and
    CPU time are the command's own; on a shared machine its CPU time shows what the wall
    time would be alone)."""
    with tempfile.TemporaryDirectory(prefix="slbench-spec-") as tmp:
        spec = synthetic_spec(Path(tmp) / "bench-spec.toml", n_runs)
        cmd = [sys.executable, "-m", "harness", "sweep", str(spec), "--dry-run",
               "--executor", "local", "--results", str(Path(tmp) / "results")]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        secs = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    lines = out.strip().splitlines()
    if proc.returncode != 0:
        raise RuntimeError(f"sweep --dry-run failed ({proc.returncode}): {out[-2000:]}")
    planned = next((x for x in lines if x.startswith("study ")), "")
    return secs, usage.ru_maxrss / 1024, planned, usage.ru_utime + usage.ru_stime


def spec_lines(secs: float, rss_mb: float, planned: str, cpu_s: float) -> list[str]:
    """PASS/MISS lines of the spec bench against its targets."""
    return [f"{'PASS' if secs < SPEC_TARGET_S else 'MISS'} spec: sweep --dry-run of "
            f"{planned or 'the synthetic spec'} in {secs:.1f} s, {cpu_s:.1f} s of CPU "
            f"(target < {SPEC_TARGET_S:g} s)",
            f"{'PASS' if rss_mb < SPEC_TARGET_MB else 'MISS'} spec: peak RSS {rss_mb:.0f} MB "
            f"(target < {SPEC_TARGET_MB:g} MB)"]
