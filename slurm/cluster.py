#!/usr/bin/env python3
"""A real single-node SLURM cluster on localhost, with accounting, for tests and trials.

    python slurm/cluster.py start|stop|status|wait-idle|env [--dir DIR]

Daemons, started in this order and stopped in reverse: munged (private socket) -> mariadbd
(private datadir, --skip-networking, socket auth as root) -> slurmdbd -> slurmctld -> slurmd.
Every config, state, spool, pid, socket and log file lives under one state folder (default
/tmp/slbench-slurm; env SLBENCH_SLURM_DIR or --dir overrides). slurm.conf is generated on
each start from `slurmd -C`. Needs root (SlurmUser=root) and the Debian packages installed by
`make system-deps` (slurm/install.sh); works without systemd.

Clients (sbatch, squeue, sacct, scontrol and so submitit, which shells out to them with the
calling process's environment) find the cluster through SLURM_CONF: see client_env(). The
munge socket path is inside slurm.conf (AuthInfo=socket=... and, for connections to
slurmdbd such as sacctmgr's, AccountingStoragePass=<socket>), so SLURM_CONF is all they need.

Fixed ports 6817 (slurmctld), 6818 (slurmd), 6819 (slurmdbd): one such cluster per machine.
`start` is a no-op when all daemons run and the node is usable (idle, or busy with jobs); it
starts only what is missing, restarts the SLURM daemons when the generated config changed, and
resumes a drained/down node. `stop` cancels the cluster's jobs first; `stop --wipe` also
deletes the state folder (job ids then restart at 1).

Importable: start(), stop(), status(), wait_idle(), client_env(), state_dir(), node_state(),
missing_packages(), ClusterError.
Stdlib only.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DIR = "/tmp/slbench-slurm"
CLUSTER_NAME = "slbench"
PARTITION = "debug"
MAX_ARRAY_SIZE = 5  # see the MaxArraySize line of the generated slurm.conf
CTLD_PORT, SLURMD_PORT, DBD_PORT = 6817, 6818, 6819
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")  # start order

# binary -> Debian package that ships it
_BINARIES = {
    "munged": "munge", "slurmctld": "slurmctld", "slurmd": "slurmd", "slurmdbd": "slurmdbd",
    "sbatch": "slurm-client", "sinfo": "slurm-client", "scontrol": "slurm-client",
    "sacctmgr": "slurm-client", "sacct": "slurm-client", "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
}


class ClusterError(RuntimeError):
    """A one-line, user-facing reason why the cluster could not be started/used."""


# ----------------------------------------------------------------------------- paths

def state_dir(path: str | os.PathLike | None = None) -> Path:
    """The cluster's state folder: ``path``, else $SLBENCH_SLURM_DIR, else /tmp/slbench-slurm."""
    return Path(path or os.environ.get("SLBENCH_SLURM_DIR") or DEFAULT_DIR).absolute()


class _Paths:
    def __init__(self, root: Path):
        self.root = root
        self.etc = root / "etc"
        self.slurm_conf = self.etc / "slurm.conf"
        self.dbd_conf = self.etc / "slurmdbd.conf"
        self.plugstack = self.etc / "plugstack.conf"
        self.log = root / "log"
        self.run = root / "run"
        self.munge = root / "munge"
        self.munge_sock = self.munge / "munge.socket"
        self.mysql = root / "mysql"
        self.mysql_sock = self.run / "mysqld.sock"
        self.mysql_marker = self.mysql / ".slbench-initialized"
        self.ctld_state = root / "ctld"
        self.slurmd_spool = root / "slurmd"
        self.registered = root / ".cluster-registered"

    def pid(self, daemon: str) -> Path:
        return (self.munge if daemon == "munged" else self.run) / f"{daemon}.pid"

    def logfile(self, daemon: str) -> Path:
        return (self.munge if daemon == "munged" else self.log) / f"{daemon}.log"


def client_env(path: str | os.PathLike | None = None) -> dict[str, str]:
    """Environment variables a SLURM client (sbatch/squeue/sacct/scontrol, submitit) needs.

    submitit runs sbatch/sacct/scancel with ``subprocess`` and no ``env=``, i.e. with the
    calling process's os.environ, and sbatch exports that environment to the job (where
    submitit's requeue calls scontrol): so setting these in os.environ of the submitting
    process is enough.
    """
    return {"SLURM_CONF": str(_Paths(state_dir(path)).slurm_conf)}


# ----------------------------------------------------------------------------- helpers

def missing_packages() -> list[str]:
    """Debian packages whose programs the cluster needs but cannot find."""
    return sorted({pkg for b, pkg in _BINARIES.items() if not shutil.which(b)})


def _check_prereqs() -> None:
    missing = missing_packages()
    if missing:
        raise ClusterError(
            f"SLURM packages missing ({', '.join(missing)}): run `make system-deps` "
            "(slurm/install.sh) as root")
    if os.geteuid() != 0:
        raise ClusterError("starting the local SLURM cluster needs root (SlurmUser=root)")


def _run(cmd: list[str], env: dict | None = None, timeout: float = 30, check: bool = True,
         **kw) -> subprocess.CompletedProcess:
    try:
        p = subprocess.run(cmd, env=env, timeout=timeout, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, **kw)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"`{' '.join(cmd)}` timed out after {timeout:.0f} s") from None
    if check and p.returncode != 0:
        msg = (p.stderr or p.stdout).strip().splitlines()
        raise ClusterError(f"`{' '.join(cmd)}` failed: {msg[-1] if msg else p.returncode}")
    return p


def _launch(cmd: list[str], paths: _Paths, name: str, env: dict, **kw) -> None:
    """Run a self-daemonising launcher with stdio on a file, never on a pipe: a daemon that
    keeps an inherited pipe open would hang this call (and a caller reading our output)."""
    out = paths.log / f"{name}.stdio"
    with open(out, "ab") as fh:
        try:
            rc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh,
                                timeout=60, **kw).returncode
        except subprocess.TimeoutExpired:
            raise ClusterError(f"`{cmd[0]}` launcher did not return within 60 s") from None
    if rc != 0:
        raise ClusterError(f"{name} failed to start (exit {rc}); see {out}: "
                           f"{_last_log_line(out)}; {paths.logfile(name)}: "
                           f"{_last_log_line(paths.logfile(name))}")


def _daemon_env(paths: _Paths) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    env.update(client_env(paths.root))
    env["MYSQL_UNIX_PORT"] = str(paths.mysql_sock)  # libmariadb (slurmdbd) honours it
    return env


def _pids(paths: _Paths) -> dict[str, int | None]:
    """Live pid of each daemon of *this* cluster.

    Matched by name and by SLURM_CONF=<this cluster's slurm.conf> in the process environment
    (every daemon is started with it; slurmdbd's command line names no path).
    """
    found: dict[str, int | None] = dict.fromkeys(DAEMONS)
    marker = f"SLURM_CONF={paths.slurm_conf}".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            comm = (d / "comm").read_text().strip()
            if comm not in found or found[comm]:
                continue
            environ = (d / "environ").read_bytes().split(b"\0")
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if marker in environ and stat.rsplit(")", 1)[1].split()[0] != "Z":
            found[comm] = int(d.name)
    return found


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def _unix_open(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def _last_log_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    errs = [ln for ln in lines if "error" in ln.lower() or "fatal" in ln.lower()]
    return (errs or lines or ["(empty log)"])[-1].strip()


def _wait(cond, timeout: float, what: str, log: Path | None = None, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            hint = f"; see {log}: {_last_log_line(log)}" if log else ""
            raise ClusterError(f"{what} not ready after {timeout:.0f} s{hint}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.2)


@contextlib.contextmanager
def _lock(paths: _Paths):
    """Serialise start/stop of one state dir across processes (e.g. parallel pytest runs)."""
    lock = paths.root.parent / f".{paths.root.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- configs

def _node_line() -> tuple[str, str]:
    out = _run(["slurmd", "-C"]).stdout.splitlines()
    line = next((ln.strip() for ln in out if ln.startswith("NodeName=")), None)
    if not line:
        raise ClusterError("`slurmd -C` printed no NodeName= line")
    return line.split()[0].split("=", 1)[1], f"{line} NodeAddr=127.0.0.1"


def _slurm_conf(paths: _Paths, node_line: str) -> str:
    host = socket.gethostname().split(".")[0]
    r = paths.root
    return f"""\
# Generated by slurm/cluster.py on every start: edits are overwritten.
ClusterName={CLUSTER_NAME}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={CTLD_PORT}
SlurmdPort={SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10,socket={paths.munge_sock}
StateSaveLocation={paths.ctld_state}
SlurmdSpoolDir={paths.slurmd_spool}
SlurmctldPidFile={paths.pid('slurmctld')}
SlurmdPidFile={paths.pid('slurmd')}
SlurmctldLogFile={paths.logfile('slurmctld')}
SlurmdLogFile={paths.logfile('slurmd')}
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={paths.plugstack}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={DBD_PORT}
# connections to slurmdbd authenticate through this munge socket (not AuthInfo's)
AccountingStoragePass={paths.munge_sock}
JobCompType=jobcomp/none
KillWait=5
# deliberately small (SLURM's default is 1001) so the tests exercise splitting big studies
# into several job arrays
MaxArraySize={MAX_ARRAY_SIZE}
InactiveLimit=0
Waittime=0
MinJobAge=300
{node_line}
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
# state folder: {r}
"""


def _dbd_conf(paths: _Paths) -> str:
    return f"""\
# Generated by slurm/cluster.py on every start: edits are overwritten.
AuthType=auth/munge
AuthInfo=socket={paths.munge_sock}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={DBD_PORT}
SlurmUser=root
DebugLevel=info
LogFile={paths.logfile('slurmdbd')}
PidFile={paths.pid('slurmdbd')}
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
"""


def _write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    old = path.read_text() if path.exists() else None
    if old != text:
        path.write_text(text)
    os.chmod(path, mode)
    return old is not None and old != text


# ----------------------------------------------------------------------------- daemons

def _start_munged(paths: _Paths, env: dict) -> None:
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        _run(["mungekey", "--create", f"--keyfile={key}"], user="munge", group="munge")
    pw = pwd.getpwnam("munge")
    paths.munge.mkdir(mode=0o755, exist_ok=True)
    os.chown(paths.munge, pw.pw_uid, pw.pw_gid)
    os.chmod(paths.munge, 0o755)
    with contextlib.suppress(FileNotFoundError):
        paths.munge_sock.unlink()
    _launch(["munged", f"--socket={paths.munge_sock}", f"--pid-file={paths.pid('munged')}",
          f"--log-file={paths.logfile('munged')}", f"--seed-file={paths.munge / 'munged.seed'}",
          f"--key-file={key}", "--force"], paths, "munged", env, user="munge", group="munge")
    _wait(lambda: _unix_open(paths.munge_sock), 10, "munged", paths.logfile("munged"))


def _mysql_opts() -> list[str]:
    # the sizes slurmdbd asks for (smaller ones log an error on every start)
    return ["--innodb-buffer-pool-size=1G", "--innodb-log-file-size=64M",
            "--innodb-lock-wait-timeout=900",
            "--performance-schema=OFF", "--innodb-flush-log-at-trx-commit=2",
            "--skip-name-resolve"]


def _start_mariadb(paths: _Paths, env: dict) -> None:
    if paths.mysql.exists() and not paths.mysql_marker.exists():
        shutil.rmtree(paths.mysql)  # a half-done initialisation
    if not paths.mysql.exists():
        with contextlib.suppress(FileNotFoundError):
            paths.registered.unlink()  # a new database knows no cluster yet
        paths.mysql.mkdir()
        _run(["mariadb-install-db", "--no-defaults", f"--datadir={paths.mysql}", "--user=root",
              "--auth-root-authentication-method=socket", "--skip-test-db",
              *_mysql_opts()], env=env, timeout=120)
        paths.mysql_marker.touch()
    with contextlib.suppress(FileNotFoundError):
        paths.mysql_sock.unlink()
    # setsid -f: detached grandchild, so no caller (pytest) is left with a child to reap.
    _launch(["setsid", "-f", "mariadbd", "--no-defaults", "--user=root",
             f"--datadir={paths.mysql}", f"--socket={paths.mysql_sock}",
             f"--pid-file={paths.pid('mariadbd')}", f"--log-error={paths.logfile('mariadbd')}",
             "--skip-networking", *_mysql_opts()], paths, "mariadbd", env)
    _wait(lambda: _unix_open(paths.mysql_sock), 60, "mariadbd", paths.logfile("mariadbd"))


def _start_slurmdbd(paths: _Paths, env: dict) -> None:
    _launch(["slurmdbd"], paths, "slurmdbd", env)
    _wait(lambda: _run(["sacctmgr", "-n", "list", "cluster"], env=env, check=False).returncode
          == 0, 30, "slurmdbd", paths.logfile("slurmdbd"))


def _register_cluster(paths: _Paths, env: dict) -> None:
    if paths.registered.exists():
        return

    def listed():  # None until slurmdbd answers, then [registered?]
        p = _run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], env=env,
                 check=False)
        return [CLUSTER_NAME in p.stdout.split()] if p.returncode == 0 else None

    if not _wait(listed, 20, "slurmdbd (sacctmgr)", paths.logfile("slurmdbd"))[0]:
        _run(["sacctmgr", "-i", "add", "cluster", CLUSTER_NAME], env=env)
    paths.registered.touch()


def _start_slurmctld(paths: _Paths, env: dict) -> None:
    _launch(["slurmctld", "-f", str(paths.slurm_conf)], paths, "slurmctld", env)
    _wait(lambda: "UP" in _run(["scontrol", "ping"], env=env, check=False).stdout, 30,
          "slurmctld", paths.logfile("slurmctld"))


def _start_slurmd(paths: _Paths, env: dict, node: str) -> None:
    launched = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(int(time.time())))
    _launch(["slurmd", "-f", str(paths.slurm_conf), "-N", node], paths, "slurmd", env)

    def registered():  # slurmctld records SlurmdStartTime when this slurmd registers
        out = _run(["scontrol", "show", "node", node, "-o"], env=env, check=False).stdout
        t = next((w.split("=", 1)[1] for w in out.split() if w.startswith("SlurmdStartTime=")),
                 "")
        return t[:1].isdigit() and t >= launched
    _wait(registered, 30, "slurmd registration", paths.logfile("slurmd"))


def _kill(pid: int, name: str, timeout: float = 15) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)

    def gone():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return True
        return stat.rsplit(")", 1)[1].split()[0] == "Z" or comm != name
    try:
        _wait(gone, timeout, f"{name} (pid {pid}) exit")
    except ClusterError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait(gone, 5, f"{name} (pid {pid}) exit after SIGKILL")


# ----------------------------------------------------------------------------- node state

def node_state(path: str | os.PathLike | None = None) -> str:
    """The node's state as sinfo prints it (idle, mixed, allocated, drained, down*, ...)."""
    env = {**os.environ, **client_env(path)}
    p = _run(["sinfo", "-h", "-N", "-o", "%T"], env=env, check=False, timeout=10)
    return p.stdout.strip().splitlines()[0] if p.returncode == 0 and p.stdout.strip() else ""


_USABLE = ("idle", "mixed", "allocated", "completing")


def _wait_node_usable(paths: _Paths, node: str, timeout: float) -> str:
    env = _daemon_env(paths)
    deadline = time.monotonic() + timeout
    t0 = time.monotonic()
    resumed_at = None
    interval = 0.05
    while True:
        st = node_state(paths.root)
        if st in _USABLE:
            return st
        if st.startswith("inval"):
            reason = _run(["scontrol", "show", "node", node], env=env, check=False).stdout
            raise ClusterError(f"node {node} is INVALID (config does not match the machine): "
                               + " ".join(reason.split())[-200:])
        bad = ("drain" in st or "down" in st or "fail" in st)
        # '*' = not responding: slurmd may still be registering; resume after a grace period
        if bad and ("*" not in st or time.monotonic() - t0 > 5) and \
                (resumed_at is None or time.monotonic() - resumed_at > 3):
            _run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], env=env,
                 check=False)
            resumed_at = time.monotonic()
        if time.monotonic() > deadline:
            log = paths.logfile("slurmd")
            raise ClusterError(f"node {node} is '{st or 'unknown'}' after {timeout:.0f} s; "
                               f"see {log}: {_last_log_line(log)}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.3)


# ----------------------------------------------------------------------------- public API

def status(path: str | os.PathLike | None = None) -> dict:
    """{'state_dir', 'pids': {daemon: pid|None}, 'node': sinfo state, 'healthy': bool}."""
    paths = _Paths(state_dir(path))
    pids = _pids(paths)
    node = node_state(paths.root) if pids["slurmctld"] and paths.slurm_conf.exists() else ""
    healthy = all(pids.values()) and node in _USABLE
    return {"state_dir": str(paths.root), "pids": pids, "node": node, "healthy": healthy}


def start(path: str | os.PathLike | None = None, timeout: float = 60, quiet: bool = True) -> float:
    """Start whatever is not running, wait until the node is usable; return seconds taken.

    A no-op (apart from the checks) when the cluster is already running and healthy.
    """
    t0 = time.monotonic()
    paths = _Paths(state_dir(path))
    _check_prereqs()
    say = (lambda m: None) if quiet else (lambda m: print(m, flush=True))
    with _lock(paths):
        for d in (paths.root, paths.etc, paths.log, paths.run, paths.ctld_state,
                  paths.slurmd_spool):
            d.mkdir(parents=True, exist_ok=True)
        node, node_line = _node_line()
        changed = _write_if_changed(paths.slurm_conf, _slurm_conf(paths, node_line))
        changed |= _write_if_changed(paths.dbd_conf, _dbd_conf(paths), 0o600)
        _write_if_changed(paths.plugstack, "# no SPANK plugins\n")
        pids = _pids(paths)
        if changed and any(pids[d] for d in ("slurmdbd", "slurmctld", "slurmd")):
            say("config changed: restarting the SLURM daemons")
            for d in ("slurmd", "slurmctld", "slurmdbd"):
                if pids[d]:
                    _kill(pids[d], d)
            pids = _pids(paths)
        env = _daemon_env(paths)
        starters = {
            "munged": lambda: _start_munged(paths, env),
            "mariadbd": lambda: _start_mariadb(paths, env),
            "slurmdbd": lambda: _start_slurmdbd(paths, env),
            "slurmctld": lambda: _start_slurmctld(paths, env),
            "slurmd": lambda: _start_slurmd(paths, env, node),
        }
        for d in DAEMONS:
            if d == "slurmctld":
                _register_cluster(paths, env)
            if not pids[d]:
                port = {"slurmdbd": DBD_PORT, "slurmctld": CTLD_PORT, "slurmd": SLURMD_PORT}.get(d)
                if port and not _port_free(port):
                    raise ClusterError(
                        f"cannot start {d}: port {port} is in use by another process (another "
                        "SLURM cluster on this machine? stop it first)")
                # a stale pid file would make slurm*d "kill the old daemon": maybe a reused pid
                with contextlib.suppress(FileNotFoundError):
                    paths.pid(d).unlink()
                t = time.monotonic()
                starters[d]()
                say(f"started {d} ({time.monotonic() - t:.1f} s)")
        st = _wait_node_usable(paths, node, timeout)
    dt = time.monotonic() - t0
    say(f"SLURM cluster '{CLUSTER_NAME}' up (node {node} {st}) in {dt:.1f} s; "
        f"export SLURM_CONF={paths.slurm_conf}")
    return dt


def stop(path: str | os.PathLike | None = None, wipe: bool = False, quiet: bool = True) -> None:
    """Cancel this cluster's jobs, stop its daemons (reverse order); ``wipe`` removes the state."""
    paths = _Paths(state_dir(path))
    say = (lambda m: None) if quiet else (lambda m: print(m, flush=True))
    with _lock(paths):
        pids = _pids(paths)
        if pids["slurmctld"] and paths.slurm_conf.exists() and shutil.which("squeue"):
            env = _daemon_env(paths)
            jobs = _run(["squeue", "-h", "-o", "%A"], env=env, check=False).stdout.split()
            if jobs:
                say(f"cancelling {len(jobs)} job(s)")
                _run(["scancel", *jobs], env=env, check=False)
                with contextlib.suppress(ClusterError):
                    _wait(lambda: not _run(["squeue", "-h", "-t", "R,CG", "-o", "%A"], env=env,
                                           check=False).stdout.strip(), 15, "job cancellation")
        for d in reversed(DAEMONS):
            if pids[d]:
                say(f"stopping {d} (pid {pids[d]})")
                _kill(pids[d], d)
        if wipe and paths.root.exists():
            say(f"removing {paths.root}")
            shutil.rmtree(paths.root)


def wait_idle(path: str | os.PathLike | None = None, timeout: float = 60) -> None:
    """Wait until the queue is empty and the node is idle."""
    paths = _Paths(state_dir(path))
    env = {**os.environ, **client_env(paths.root)}

    def idle():
        q = _run(["squeue", "-h", "-o", "%A"], env=env, check=False, timeout=10)
        return q.returncode == 0 and not q.stdout.strip() and node_state(paths.root) == "idle"
    _wait(idle, timeout, "idle node and empty queue", paths.logfile("slurmctld"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="slurm/cluster.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["start", "stop", "status", "wait-idle", "env"])
    ap.add_argument("--dir", help=f"state folder (default $SLBENCH_SLURM_DIR or {DEFAULT_DIR})")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--wipe", action="store_true", help="stop: also delete the state folder")
    a = ap.parse_args(argv)
    try:
        if a.command == "start":
            start(a.dir, timeout=a.timeout, quiet=False)
        elif a.command == "stop":
            stop(a.dir, wipe=a.wipe, quiet=False)
        elif a.command == "wait-idle":
            wait_idle(a.dir, timeout=a.timeout)
        elif a.command == "env":
            for k, v in client_env(a.dir).items():
                print(f"export {k}={v}")
        else:
            s = status(a.dir)
            for d, pid in s["pids"].items():
                print(f"{d:10s} {'running, pid ' + str(pid) if pid else 'stopped'}")
            print(f"{'node':10s} {s['node'] or '-'}")
            print(f"state dir  {s['state_dir']}")
            print("healthy" if s["healthy"] else "not healthy")
            return 0 if s["healthy"] else 1
    except ClusterError as e:
        print(f"slurm/cluster.py {a.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
