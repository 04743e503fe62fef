"""Where a run ran: device, versions, commit, memory."""
from __future__ import annotations

import functools
import os
import platform
import resource
import socket
import subprocess
import sys
from pathlib import Path

import torch

from methods.base import UserError

REPO = Path(__file__).resolve().parent.parent


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("device", f"{name!r} requested but no CUDA device is available; "
                        "pass --device cpu or auto")
    return torch.device(name)


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """HEAD of the harness checkout, with '-dirty' when tracked files differ; 'unknown'
    outside git. SLBENCH_COMMIT overrides (jobs running from a copied tree)."""
    if os.environ.get("SLBENCH_COMMIT"):
        return os.environ["SLBENCH_COMMIT"]
    try:
        proc = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "-q", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        head = proc.stdout.strip()
        if proc.returncode != 0 or not head:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {cpu} ({torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict[str, str]:
    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "device": str(device), "device_name": device_name(device),
            "harness_commit": git_commit(), "hostname": socket.gethostname()}


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA allocator statistics, or the process's peak resident set
    (Linux: writing 5 to /proc/self/clear_refs resets VmHWM), so a worker process that
    trains several runs in turn reports each run's own peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak allocated by torch. CPU: the peak resident set since the last reset
    (VmHWM; the process-lifetime ru_maxrss where /proc is missing)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
