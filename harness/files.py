"""The one safe file layer: every record, checkpoint, report file, log and lock goes through
here.

- A file is replaced atomically: a temp file of this process's own (created O_EXCL|O_NOFOLLOW
  under a unique name ``.NAME.<owner tag>.slbench-tmp`` in the same folder), fsync, rename;
  a killed process leaves either the old or the new file, never half of one.
- Nothing is written through a symbolic link: a target that is a link (or a folder) is
  refused with a one-line UserError, appends (log.txt, submissions.jsonl) open O_NOFOLLOW,
  and with ``root`` the folder written into must lie inside ``root`` once resolved.
- Clean-ups delete only what is theirs: a stale temp file only when it carries the harness's
  temp suffix and this user's owner tag and its writer is gone; ``remove_file`` only a
  regular file (not a link) inside its root.
- Reads of records are bounded: ``read_json`` reads regular files only (a FIFO never blocks
  it), at most ``max_bytes`` and ``max_depth`` levels of nesting (a hostile record is a
  ValueError, never a crash).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import secrets
import socket
import stat
from pathlib import Path
from typing import IO, Any

from harness.errors import UserError

TEMP_SUFFIX = ".slbench-tmp"
# this process's owner tag: user id, a hash of the host name, process id
HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<uid>\d+)-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-"
                   r"[0-9a-f]{8}" + re.escape(TEMP_SUFFIX))
# what a record (config.json, summary.json, .owner, a report index) may be
RECORD_MAX_BYTES = 16 * 2**20
JSON_MAX_DEPTH = 64
MANIFEST_MAX_BYTES = 512 * 2**20  # a study's manifest.json (10^5 runs take ~60 MB)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def owner_tag() -> str:
    return f"{os.getuid()}-{HOST_TAG}-{os.getpid()}"


def temp_name(name: str) -> str:
    """A unique temp file name for ``name``, carrying the suffix and this process's tag."""
    return f".{name}.{owner_tag()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"


def _refuse(path: Path, what: str) -> UserError:
    return UserError(str(path), f"{what}; the harness never writes or deletes through links "
                     "or outside its folders: remove it (or choose another folder)")


def _real(fd: int, fallback: Path) -> Path:
    """The resolved path of an open folder."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return Path(os.path.realpath(fallback))


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` (resolved, links followed) lies inside ``root`` (resolved)."""
    return Path(os.path.realpath(path)).is_relative_to(Path(os.path.realpath(root)))


@contextlib.contextmanager
def _folder(path: Path, root: Path | None, create: bool = True):
    """An open file descriptor on ``path``'s folder (made when missing), checked to lie
    inside ``root`` once resolved."""
    parent = path.parent
    if create:
        parent.mkdir(parents=True, exist_ok=True)
    dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        if root is not None and not _real(dfd, parent).is_relative_to(
                Path(os.path.realpath(root))):
            raise _refuse(parent, f"resolves to {str(_real(dfd, parent))!r}, outside "
                                  f"{str(root)!r}")
        yield dfd
    finally:
        os.close(dfd)


def _check_slot(dfd: int, path: Path) -> None:
    """Refuse to replace a link or a folder (a regular file, or nothing, is fine)."""
    try:
        st = os.lstat(path.name, dir_fd=dfd)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(path, "is a symbolic link")
    if stat.S_ISDIR(st.st_mode):
        raise UserError(str(path), "is a folder where the harness writes a file; move it away")


def check_target(path: Path) -> None:
    """The checks a write of ``path`` makes, made up front (before any work): a UserError
    when it is a link, a folder or another file that is not a regular one (a FIFO would
    block whoever opens it)."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise _refuse(path, "is a symbolic link")
    if stat.S_ISDIR(mode):
        raise UserError(str(path), "is a folder where the harness writes a file; move it away")
    if not stat.S_ISREG(mode):
        raise UserError(str(path), "is not a regular file (a FIFO, socket or device) where the "
                        "harness writes a file; move it away")


def atomic_write(path: Path, write, root: Path | None = None) -> None:
    """Replace ``path`` with what ``write(f)`` writes to a binary file (see the module
    docstring); ``root``: the folder the write must stay inside."""
    path = Path(path)
    with _folder(path, root) as dfd:
        _check_slot(dfd, path)
        tmp = temp_name(path.name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o666,
                     dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise


def atomic_write_text(path: Path, text: str, root: Path | None = None) -> None:
    atomic_write(path, lambda f: f.write(text.encode(errors="surrogateescape")), root)


def atomic_write_bytes(path: Path, data: bytes, root: Path | None = None) -> None:
    atomic_write(path, lambda f: f.write(data), root)


def json_safe(obj: Any) -> Any:
    """JSON cannot hold NaN/inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: Path, obj: Any, root: Path | None = None) -> None:
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=True) + "\n", root)


def atomic_save_npy(path: Path, arr: Any) -> None:
    import numpy as np

    atomic_write(path, lambda f: np.save(f, arr))


def _open_regular(path: Path, flags: int, field: str | None = None) -> int:
    """os.open of a regular file that is not a link (O_NONBLOCK: a FIFO never blocks)."""
    try:
        fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _refuse(Path(path), "is a symbolic link") from None
        if e.errno == errno.ENXIO:  # a FIFO nobody reads
            raise UserError(str(path), "is not a regular file; move it away") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(field or str(path), f"{str(path)!r} is not a regular file; move it "
                        "away")
    os.set_blocking(fd, True)
    return fd


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (created when missing), never through a link."""
    fd = _open_regular(Path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "ab") as f:
        f.write(text.encode(errors="surrogateescape"))


def open_append(path: Path) -> IO[str]:
    """A text file opened for appending (line-buffered), never through a link."""
    fd = _open_regular(Path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    return os.fdopen(fd, "a", buffering=1, errors="surrogateescape")


def open_lock(path: Path) -> IO[bytes]:
    """A lock file (for fcntl.flock), created when missing, never truncated, never a link."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return os.fdopen(_open_regular(Path(path), os.O_RDWR | os.O_CREAT), "rb+", buffering=0)


def append_log(run_dir: Path, line: str) -> None:
    append_text(Path(run_dir) / "log.txt", line.rstrip("\n") + "\n")


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files killed atomic writes left in ``folder``: only regular files
    that carry the harness's temp suffix and this user's owner tag, and whose writer is no
    longer running (a live writer's on this host is left alone). Call it while holding the
    folder's lock. A user's own ``.something.tmp`` is never touched."""
    gone = []
    folder = Path(folder)
    for entry in os.scandir(folder):
        m = _TEMP.fullmatch(entry.name)
        if m is None or int(m["uid"]) != os.getuid() or not entry.is_file(follow_symlinks=False):
            continue
        if m["host"] == HOST_TAG and _pid_runs(int(m["pid"])):
            continue
        with contextlib.suppress(OSError):
            os.unlink(folder / entry.name)
            gone.append(folder / entry.name)
    return gone


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_file(path: Path, root: Path) -> bool:
    """Delete ``path`` when it is a regular file (not a link) whose folder lies inside
    ``root`` once resolved; anything else is left alone. True when deleted."""
    path = Path(path)
    try:
        with _folder(path, root, create=False) as dfd:
            if not stat.S_ISREG(os.lstat(path.name, dir_fd=dfd).st_mode):
                return False
            os.unlink(path.name, dir_fd=dfd)
            return True
    except (OSError, UserError):
        return False


def remove_own(path: Path) -> None:
    """Delete a file this process created (e.g. RUN_DIR/.owner), never what a link names."""
    with contextlib.suppress(OSError):
        if not Path(path).is_symlink():
            os.unlink(path)


def make_dir(path: Path, root: Path) -> Path:
    """Create folder ``path`` (and parents) and check it lies inside ``root`` once resolved
    and is not a link; a UserError otherwise."""
    path = Path(path)
    if path.is_symlink():
        raise _refuse(path, "is a symbolic link")
    path.mkdir(parents=True, exist_ok=True)
    if not inside(path, root):
        raise _refuse(path, f"resolves to {os.path.realpath(path)!r}, outside {str(root)!r}")
    return path


def ensure_writable_dir(path: Path, field: str, fix: str) -> None:
    """Create ``path`` and check a file can be written there, or raise a UserError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(field, f"{str(path)!r} is a file; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        # a probe of this process's own, under a unique name (two sweeps starting together
        # once shared one name, and the second's unlink failed after the first removed it)
        probe = path / temp_name("write-probe")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC,
                         0o600))
        os.unlink(probe)
    except OSError as e:
        raise UserError(field, f"cannot write to {str(path)!r} ({e.strerror}); {fix}") from None


def read_bytes(path: Path, max_bytes: int) -> bytes:
    """A regular file's bytes (links followed; a FIFO or device is refused, never read);
    ValueError when it holds more than ``max_bytes``."""
    try:
        fd = os.open(path, os.O_RDONLY | _CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ENXIO:
            raise ValueError(f"{path} is not a regular file") from None
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path} is larger than the limit of {max_bytes:,} bytes")
    return data


def read_json(path: Path, max_bytes: int = RECORD_MAX_BYTES,
              max_depth: int = JSON_MAX_DEPTH) -> Any:
    """A JSON file, bounded (see the module docstring): ValueError (a record then counts as
    corrupt) when it is too large, nested too deeply, not UTF-8 or not JSON."""
    return loads_json(read_bytes(Path(path), max_bytes), max_depth, str(path))


def loads_json(data: bytes | str, max_depth: int = JSON_MAX_DEPTH, what: str = "JSON") -> Any:
    """json.loads that never raises anything but ValueError (deep nesting included)."""
    try:
        obj = json.loads(data)
    except RecursionError:
        raise ValueError(f"{what} is nested more than {max_depth} levels deep") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} is not UTF-8 text ({e.reason})") from None
    opens = data.count(b"[") + data.count(b"{") if isinstance(data, bytes) else \
        data.count("[") + data.count("{")
    if opens > max_depth and depth_over(obj, max_depth):  # fewer brackets cannot nest deeper
        raise ValueError(f"{what} is nested more than {max_depth} levels deep")
    return obj


def depth_over(obj: Any, max_depth: int) -> bool:
    """Whether lists/dicts in ``obj`` nest more than ``max_depth`` levels (iteratively)."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            if d > max_depth:
                return True
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return False
