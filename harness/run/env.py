"""Where a run ran: device, versions, commit, memory."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import socket
import sys
from pathlib import Path
from typing import Any

import torch

from harness.run import source
from methods.base import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("device", f"{name!r} requested but no CUDA device is available; "
                        "pass --device cpu or auto")
    return torch.device(name)


def git_commit() -> str:
    """The harness commit, with '-dirty' when tracked or untracked source differs (see
    harness.run.source); 'unknown' outside git."""
    return source.state().label


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


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def determinism() -> dict[str, Any]:
    """The switches that decide whether a rerun gives the same numbers."""
    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ""),
            "torch_threads": torch.get_num_threads()}


def environment(device: torch.device) -> dict[str, Any]:
    """Where and with what a run ran: versions, device, code (commit, snapshot), command
    line and the determinism switches."""
    src = source.state()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "torchvision": _version("torchvision"), "numpy": _version("numpy"),
            "scipy": _version("scipy"), "submitit": _version("submitit"),
            "cuda": torch.version.cuda or "none", "cudnn": str(cudnn) if cudnn else "none",
            "device": str(device), "device_name": device_name(device),
            "harness_commit": src.label, "source_snapshot": src.snapshot,
            "hostname": socket.gethostname(), "argv": list(sys.argv),
            "determinism": determinism()}


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
