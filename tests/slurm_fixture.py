"""pytest fixtures for the local single-node SLURM cluster (slurm/cluster.py).

Load with ``pytest_plugins = ["slurm_fixture"]`` in tests/conftest.py (or ``-p slurm_fixture``
with tests/ on PYTHONPATH).

- ``slurm_cluster`` (session): starts the cluster unless it is already running and healthy,
  points SLURM clients (sbatch/sacct/scontrol and so submitit, which inherits os.environ) at it
  through SLURM_CONF, and yields a :class:`SlurmCluster`. Skips only when the SLURM packages are
  absent and cannot be installed (not root / no apt-get / install failed). The cluster is left
  running at session end (the next run then starts in well under a second) unless
  ``SLBENCH_SLURM_STOP=1``.
- ``slurm_folder`` (function): a fresh submitit folder for each test: job ids restart at 1
  after the cluster's state is wiped, so a reused folder could return stale results.
- ``slurm_executor`` (function): a submitit AutoExecutor(cluster="slurm") on that folder.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_MODULE = "slbench_slurm_cluster"


def load_cluster_module():
    """slurm/cluster.py as a module (slurm/ is not a package)."""
    if _MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(_MODULE, ROOT / "slurm" / "cluster.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE] = mod
        spec.loader.exec_module(mod)
    return sys.modules[_MODULE]


@dataclass(frozen=True)
class SlurmCluster:
    state_dir: Path
    env: dict[str, str]  # what a client needs (SLURM_CONF); already set in os.environ
    slurm_conf: Path
    start_seconds: float  # time the fixture's start() took (about 0 when already running)
    partition: str = "debug"
    module: object = field(default=None, repr=False)  # slurm/cluster.py

    def executor(self, folder: str | os.PathLike, **params):
        """A submitit AutoExecutor on this cluster with small defaults (1 CPU, 10 min)."""
        import submitit

        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        ex.update_parameters(**{"timeout_min": 10, "cpus_per_task": 1,
                                "slurm_partition": self.partition, **params})
        return ex


def _ensure_packages(cluster) -> None:
    missing = cluster.missing_packages()
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        try:
            subprocess.run(["bash", str(ROOT / "slurm" / "install.sh")], timeout=900,
                           stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            pass
        missing = cluster.missing_packages()
    if missing:
        pytest.skip(f"SLURM packages missing ({', '.join(missing)}) and could not be installed "
                    "here: run `make system-deps` (slurm/install.sh) as root")


@pytest.fixture(scope="session")
def slurm_cluster():
    cluster = load_cluster_module()
    _ensure_packages(cluster)
    root = cluster.state_dir()
    if os.geteuid() != 0 and not cluster.status(root)["healthy"]:
        pytest.skip("the local SLURM cluster is not running and only root can start it "
                    "(python slurm/cluster.py start)")
    try:
        seconds = cluster.start(root) if os.geteuid() == 0 else 0.0
    except cluster.ClusterError as e:
        pytest.fail(f"local SLURM cluster did not start: {e}", pytrace=False)
    env = cluster.client_env(root)
    mp = pytest.MonkeyPatch()
    # an enclosing job's or the user's SLURM_*/SBATCH_* settings must not leak into sbatch
    for k in list(os.environ):
        if k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SACCT_")):
            mp.delenv(k)
    for k, v in env.items():
        mp.setenv(k, v)
    try:
        yield SlurmCluster(state_dir=root, env=env, slurm_conf=Path(env["SLURM_CONF"]),
                           start_seconds=seconds, module=cluster)
    finally:
        mp.undo()
        if os.environ.get("SLBENCH_SLURM_STOP") == "1":
            cluster.stop(root)


@pytest.fixture
def slurm_folder(tmp_path) -> Path:
    """A submitit folder of this test's own (node-shared storage: one node here)."""
    folder = tmp_path / "submitit"
    folder.mkdir()
    return folder


@pytest.fixture
def slurm_executor(slurm_cluster, slurm_folder):
    return slurm_cluster.executor(slurm_folder)
