"""Processes we may signal, identified beyond their PID.

A PID is reused once its process ends, so a PID written in a record can later name an
unrelated process. An identity here is (host, pid, process group, start token); the token
is the kernel boot id plus the process's start time in clock ticks (field 22 of
/proc/PID/stat), which no later process with the same PID can share. Nothing is signalled
and nothing is called alive unless the token still matches.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from harness import files


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "noboot"


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0]), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def start_token(pid: int) -> str | None:
    fields = _stat(pid)
    if fields is None or len(fields) < 20:
        return None
    return f"{_boot_id()}:{fields[19]}"  # field 22 of stat: start time since boot (ticks)


def identity(pid: int, group: bool = True) -> dict[str, Any]:
    """What a record keeps to find this process again, and only this process. ``group``:
    signals go to its whole process group (a worker started in a session of its own, with
    its DataLoader children); otherwise to the process alone (a sweep started from a shell,
    whose group may hold the user's other commands)."""
    pgid = None
    if group:
        try:
            pgid = os.getpgid(pid)
        except OSError:
            pgid = pid
    return {"pid": pid, "pgid": pgid, "token": start_token(pid), "host": socket.gethostname()}


def alive(ident: Any) -> bool:
    """True while the process ``ident`` names runs (not a zombie, same start token)."""
    if not isinstance(ident, dict) or ident.get("host") != socket.gethostname():
        return False
    pid, token = ident.get("pid"), ident.get("token")
    if not isinstance(pid, int) or not token:
        return False
    fields = _stat(pid)
    if fields is None or fields[0] == "Z":
        return False
    return start_token(pid) == token


def signal_group(ident: dict[str, Any], sig: int) -> bool:
    """Send ``sig`` to the process group of ``ident`` if (and only if) that process still
    runs; True when sent. The group is signalled only when the recorded process is its
    leader (pgid == pid, and the kernel says so now), so the token checked is the group
    leader's: a record naming one live process and another group's id signals that process
    alone. A group whose leader is gone is left alone (its ID may have been reused)."""
    if not alive(ident) or ident["pid"] <= 1 or ident["pid"] == os.getpid():
        return False  # never init, never the process that asks
    pid, pgid = ident["pid"], ident.get("pgid")
    try:
        leader = pgid == pid and os.getpgid(pid) == pgid and pgid != os.getpgid(0)
        if leader:
            os.killpg(pgid, sig)
        else:  # never our own group, never a group we cannot tie to the token
            os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def terminate(idents: list[dict[str, Any]], grace_s: float = 10.0) -> int:
    """SIGTERM each process group, wait up to ``grace_s`` for them to end, SIGKILL the rest.
    Returns how many were really signalled (alive with a matching token)."""
    sent = [i for i in idents if signal_group(i, signal.SIGTERM)]
    deadline = time.monotonic() + grace_s
    while any(alive(i) for i in sent) and time.monotonic() < deadline:
        time.sleep(0.05)  # an exited child of ours is a zombie: alive() calls it gone
    for i in sent:
        signal_group(i, signal.SIGKILL)
    return len(sent)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Linux: have the kernel send ``sig`` to this process when its parent dies, so a
    killed sweep leaves no worker training on its own (PR_SET_PDEATHSIG)."""

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def owner_alive(run_dir: Path) -> bool:
    """True while the process named in RUN_DIR/.owner (its trainer) still runs."""
    try:
        return alive(files.read_json(Path(run_dir) / ".owner"))
    except (OSError, ValueError):
        return False
