"""What a local sweep says while it runs: a line when a run starts (and where it resumes), a
line when it ends, and a heartbeat while nothing ends, each with an ETA estimated from the
study's own epochs as they arrive.

The ETA model: a run takes ``overhead + epochs x per_epoch`` seconds of one worker.
``per_epoch`` is the mean ``epoch_time_s`` of every metrics row the study's runs have written
so far (finished and running); ``overhead`` (start-up, evaluation, export) the mean, over
finished runs, of their wall time less their epochs' training time (before any has finished:
what running runs have spent beyond their epochs so far, a lower bound). The work left is
the queued runs' whole estimates plus what running runs have left of theirs; the ETA is that
work over the workers, and never less than the longest running run's remainder. Before the
first epoch of the sweep there is no estimate, and the lines say so.
"""
from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import files, records

HEARTBEAT_S = 30.0   # the longest a sweep stays silent while its runs train


@dataclass
class Active:
    """A run a worker is training: its epochs, when it started, where it resumed."""

    epochs: int
    t0: float
    resumed: int = 0              # epochs already done when it started


@dataclass
class Progress:
    """The sweep's view of its runs; ``line`` prefixes what it prints with counts and ETA."""

    total: int
    workers: int
    epochs: dict[str, int]                        # run dir -> epochs it trains
    echo: object = print
    t_start: float = field(default_factory=lambda: time.monotonic())
    done: int = 0
    started: int = 0
    active: dict[str, Active] = field(default_factory=dict)
    finished: list[tuple[float, float]] = field(default_factory=list)  # (wall, train s)
    rows: dict[str, list[float]] = field(default_factory=dict)        # run -> epoch times
    last_said: float = field(default_factory=lambda: time.monotonic())

    def start(self, run: str, queued: list[str]) -> None:
        self.started += 1
        k = resumed_epochs(Path(run))
        self.active[run] = Active(self.epochs.get(run, 1), time.monotonic(), k)
        where = f" (resumed at epoch {k} of {self.active[run].epochs})" if k else ""
        self.say(f"[start {self.started}/{self.total}] {Path(run).name}{where}", queued)

    def finish(self, run: str, result: dict, queued: list[str]) -> None:
        self.done += 1
        run_ = self.active.pop(run, None)
        times = self.rows[run] = epoch_times(Path(run))
        wall = float(result.get("elapsed") or (time.monotonic() - run_.t0 if run_ else 0.0))
        if run_ is not None and times:
            self.finished.append((wall, sum(times[run_.resumed:])))
        what = f"{result.get('status', '?')} {result.get('score') or ''}".rstrip()
        if result.get("error") and result.get("status") != "completed":
            what += f" ({result['error'][:160]})"
        self.say(f"[{self.done}/{self.total}] {Path(run).name}: {what} in {wall:.1f}s", queued)

    def beat(self, queued: list[str]) -> None:
        """A heartbeat line when nothing was said for HEARTBEAT_S seconds."""
        if time.monotonic() - self.last_said < HEARTBEAT_S:
            return
        for run in self.active:
            self.rows[run] = epoch_times(Path(run))
        running = ", ".join(f"{Path(r).name} epoch {len(self.rows.get(r, []))}/{a.epochs}"
                            for r, a in self.active.items())
        self.say(f"  ... {self.done}/{self.total} done, running: {running or 'none'}", queued)

    def say(self, line: str, queued: list[str]) -> None:
        now = time.monotonic()
        eta = self.eta(queued, now)
        self.echo(f"{line}; elapsed {dur(now - self.t_start)}, "
                  + ("ETA 0s" if self.done >= self.total else
                     f"ETA {dur(eta)}" if eta is not None else "ETA after the first epoch"))
        self.last_said = now

    def eta(self, queued: list[str], now: float) -> float | None:
        every = [t for times in self.rows.values() for t in times]
        if not every:
            return None
        per_epoch = sum(every) / len(every)
        if self.finished:
            overhead = sum(max(0.0, w - t) for w, t in self.finished) / len(self.finished)
        else:
            spent = [max(0.0, now - a.t0 - sum(self.rows.get(r, [])[a.resumed:]))
                     for r, a in self.active.items()]
            overhead = sum(spent) / len(spent) if spent else 0.0
        return estimate(per_epoch, overhead, [self.epochs.get(r, 1) for r in queued],
                        [(a.epochs - a.resumed, now - a.t0) for a in self.active.values()],
                        self.workers)


def estimate(per_epoch: float, overhead: float, queued: list[int],
             running: list[tuple[int, float]], workers: int) -> float:
    """Seconds left: (work of the queued runs + what running runs have left) / workers, at
    least the longest running run's remainder. ``queued``: epochs of each queued run;
    ``running``: (epochs it trains in this attempt, seconds it has run) of each running run."""
    left = [max(0.0, overhead + e * per_epoch - spent) for e, spent in running]
    work = sum(overhead + e * per_epoch for e in queued) + sum(left)
    return max(work / max(1, workers), max(left, default=0.0))


def resumed_epochs(run_dir: Path) -> int:
    """Epochs a run has already completed (0 for a new or a completed-then-restarted run)."""
    rec = records.load_run(run_dir, with_metrics=False)
    s = rec.summary
    if s is None or s.status == "completed":
        return 0
    return int(s.epochs_completed or 0)


def epoch_times(run_dir: Path) -> list[float]:
    """The ``epoch_time_s`` column of a run's metrics.csv so far ([] when it has none)."""
    try:
        text = files.read_bytes(run_dir / "metrics.csv", records.METRICS_MAX_BYTES).decode()
    except (OSError, ValueError, UnicodeDecodeError):
        return []
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        try:
            out.append(float(row.get("epoch_time_s") or "nan"))
        except ValueError:
            continue
    return [t for t in out if t == t and t >= 0]


def dur(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else \
        f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
