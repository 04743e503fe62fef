"""Where a study's runs execute: one job backend per executor (base.py has the interface
and the submissions log; slurm.py, local.py, debug.py the backends). What runs inside a job
is harness/run/job.py."""
from __future__ import annotations

from harness.study.backends.debug import DebugBackend
from harness.study.backends.local import LocalBackend
from harness.study.backends.slurm import SlurmBackend

BACKENDS: dict[str, type] = {"slurm": SlurmBackend, "local": LocalBackend, "debug": DebugBackend}
