"""Writing and reading files safely: every record, checkpoint and report file goes through
here. A file is replaced atomically (a temp file in the same folder, fsync, rename), so a
killed process leaves either the old or the new file, never half of one; log.txt is an
append-only log (a torn last line at worst)."""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes files 0600


def atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files a killed atomic write left behind (``.NAME.*.tmp``); call it only
    while holding the folder's lock, so no live write loses its file."""
    gone = []
    for tmp in Path(folder).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            gone.append(tmp)
    return gone


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def json_safe(obj: Any) -> Any:
    """JSON cannot hold NaN/inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=True) + "\n")


def atomic_save_npy(path: Path, arr: Any) -> None:
    import numpy as np

    atomic_write(path, lambda f: np.save(f, arr))


def ensure_writable_dir(path: Path, field: str, fix: str) -> None:
    """Create ``path`` and check a file can be written there, or raise a UserError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(field, f"{str(path)!r} is a file; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        # a probe of this process's own (two sweeps starting together once shared one name,
        # and the second's unlink failed after the first had removed it)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-"):
            pass
    except OSError as e:
        raise UserError(field, f"cannot write to {str(path)!r} ({e.strerror}); {fix}") from None


def append_log(run_dir: Path, line: str) -> None:
    with open(Path(run_dir) / "log.txt", "a") as f:
        f.write(line.rstrip("\n") + "\n")


def read_json(path: Path) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)
