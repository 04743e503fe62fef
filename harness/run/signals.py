"""How a run is stopped, held and heard: SIGTERM as :class:`Interrupted`, the tests' hold
point at an epoch boundary, and output that survives a closed reader."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from harness import files


class Interrupted(BaseException):
    """Raised by the SIGTERM handler of `run` and of local workers: the run ends as
    ``interrupted`` with its last epoch checkpoint, and a re-run resumes it. A BaseException,
    so no ``except Exception`` on the way mistakes it for a failure."""


def raise_on_sigterm() -> Any:
    """Turn SIGTERM into :class:`Interrupted` in this process (the main thread). Returns the
    handler that was there, for :func:`restore_sigterm`."""
    def handler(signum, frame):
        raise Interrupted(f"signal {signal.Signals(signum).name}")

    return signal.signal(signal.SIGTERM, handler)


def restore_sigterm(previous: Any) -> None:
    """Put back the SIGTERM handler :func:`raise_on_sigterm` replaced (the default when
    Python did not install it)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def hold_point(run_dir: Path, epoch: int) -> None:
    """A pause for tests, at an epoch boundary after a checkpoint (off unless SLBENCH_HOLD_DIR
    is set): before epoch SLBENCH_HOLD_AT_EPOCH (0-based, default 1), a run waits while
    HOLD_DIR/hold-all or HOLD_DIR/hold-<run directory name> exists, after writing
    HOLD_DIR/<run directory name>.held. A test then acts on a run at a known point (a
    signal, a requeue, a cancel) on a machine of any speed, and releases it by deleting the
    hold file."""
    hold_dir = os.environ.get("SLBENCH_HOLD_DIR")
    if not hold_dir or epoch != int(os.environ.get("SLBENCH_HOLD_AT_EPOCH", "1")):
        return
    d, name = Path(hold_dir), Path(run_dir).name
    held = False
    while (d / "hold-all").exists() or (d / f"hold-{name}").exists():
        if not held:
            files.atomic_write_text(d / f"{name}.held", f"{os.getpid()}\n")
            held = True
        time.sleep(0.05)


def safe_echo(echo: Callable[[str], None]) -> Callable[[str], None]:
    """``echo`` that goes quiet instead of failing once its reader has gone (`run | head`):
    a closed stdout never fails training."""
    state = {"open": True}

    def say(line: str) -> None:
        if not state["open"]:
            return
        try:
            echo(line)
        except BrokenPipeError:
            state["open"] = False
            if sys.stdout is sys.__stdout__:  # the process's own stdout: nothing left to flush
                with contextlib.suppress(OSError, ValueError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except ValueError:  # print to a closed file (a finished capture, say)
            state["open"] = False
    return say
