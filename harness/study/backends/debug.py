"""The debug backend: runs every run in this process, one after another (tests, debugging);
no code snapshot."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from harness.run import job, procs
from harness.study.backends.base import Submit


class DebugBackend:
    """Runs every run here, one after the other (tests, pdb); no snapshot, no signals."""

    name = "debug"
    blocking = True

    def submit(self, ctx: Submit, runs: list) -> None:
        ctx.append([{"run_id": r.run_id, "job_id": f"debug-{os.getpid()}", "executor": self.name,
                     "time": time.time()} for r in runs])
        for r in runs:
            try:
                s = job.run_one(str(ctx.sdir / "runs" / r.run_id))
                what = f"{s.status} {s.score_text()}".rstrip()
            except Exception as e:  # noqa: BLE001 - recorded in the run's summary
                what = f"failed ({f'{type(e).__name__}: {e}'.splitlines()[0][:200]})"
            ctx.echo(f"  {r.run_id}: {what}")

    def states(self, sdir: Path, subs: dict[str, dict[str, Any]]) -> dict[str, str]:
        return {r: "RUNNING" if procs.owner_alive(Path(sdir) / "runs" / r) else "GONE"
                for r in subs}

    def cancel(self, sdir: Path, subs: dict[str, dict[str, Any]]) -> str:
        return "debug runs run inside their sweep process: stop it with Ctrl-C"
