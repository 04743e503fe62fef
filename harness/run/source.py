"""The code a run ran: the harness commit, whether the source differed from it (and how),
and snapshots of the source taken when a study is submitted.

"Source" is the code a run executes: ``harness/``, ``methods/`` and ``pyproject.toml``,
tracked files and untracked (not git-ignored) ones alike, so a new method file that was
never committed still makes a run "-dirty" and appears in its saved diff.

A snapshot is a copy of that source in ``STUDY_DIR/snapshots/<id>/``, where ``id`` is a
hash of every file's path and content (identical code shares one snapshot). Queued jobs
run from it, so editing the checkout after ``sweep`` never changes what they run. The copy
carries ``SOURCE.json`` (commit, dirty, id) and, when dirty, ``SOURCE.diff``; a run started
from a snapshot reports those instead of asking git.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE_PATHS = ("harness", "methods", "pyproject.toml")
MARKER = "SOURCE.json"
DIFF = "SOURCE.diff"


@dataclass(frozen=True)
class SourceState:
    commit: str        # HEAD, or "unknown" outside git
    dirty: bool        # tracked or untracked source differs from HEAD
    diff: str          # what differs (git diff plus new files), "" when clean
    snapshot: str = ""  # snapshot id when running from one

    @property
    def label(self) -> str:
        return self.commit + ("-dirty" if self.dirty else "")


def _git(*args: str, root: Path = REPO) -> str | None:
    try:
        p = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout if p.returncode == 0 else None


def source_files(root: Path = REPO) -> list[str]:
    """Relative paths of the source files (tracked and untracked, not ignored)."""
    listed = _git("ls-files", "-co", "--exclude-standard", "--", *SOURCE_PATHS, root=root)
    if listed is None:  # not a git checkout: every file under the source paths
        names = []
        for top in SOURCE_PATHS:
            base = root / top
            if base.is_file():
                names.append(top)
            for p in sorted(base.rglob("*")) if base.is_dir() else []:
                if p.is_file() and "__pycache__" not in p.parts:
                    names.append(str(p.relative_to(root)))
        return names
    return sorted(n for n in set(listed.splitlines()) if n and (root / n).is_file())


def _untracked(root: Path) -> list[str]:
    out = _git("ls-files", "-o", "--exclude-standard", "--", *SOURCE_PATHS, root=root) or ""
    return sorted(n for n in out.splitlines() if n and (root / n).is_file())


def _diff(root: Path) -> str:
    """Tracked changes against HEAD plus every untracked source file, as one patch."""
    text = _git("diff", "HEAD", "--", *SOURCE_PATHS, root=root) or ""
    for name in _untracked(root):
        extra = subprocess.run(["git", "-C", str(root), "diff", "--no-index", "--", "/dev/null",
                                name], capture_output=True, text=True)
        text += extra.stdout
    return text


@functools.lru_cache(maxsize=4)
def state(root: Path = REPO) -> SourceState:
    """The source this process runs: from a snapshot's SOURCE.json, else from git."""
    marker = root / MARKER
    if marker.is_file():
        try:
            info = json.loads(marker.read_text())
            diff = (root / DIFF).read_text() if (root / DIFF).is_file() else ""
            return SourceState(str(info["commit"]), bool(info["dirty"]), diff,
                               str(info["snapshot"]))
        except (OSError, ValueError, KeyError):
            pass
    if os.environ.get("SLBENCH_COMMIT"):  # a copied tree that says where it came from
        return SourceState(os.environ["SLBENCH_COMMIT"], False, "")
    head = (_git("rev-parse", "--verify", "-q", "HEAD", root=root) or "").strip()
    if not head:
        return SourceState("unknown", False, "")
    diff = _diff(root)
    return SourceState(head, bool(diff.strip()), diff)


@dataclass(frozen=True)
class Snapshot:
    id: str
    path: Path


def snapshot(parent: Path, root: Path = REPO) -> Snapshot:
    """Copy the source into ``parent/<id>/`` (once per distinct content) and return it."""
    names = source_files(root)
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    sid = h.hexdigest()[:12]
    dest = Path(parent) / sid
    if (dest / MARKER).is_file():
        return Snapshot(sid, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{sid}.", dir=dest.parent))
    try:
        for name in names:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, tmp / name)
        src = state(root)
        if src.diff:
            (tmp / DIFF).write_text(src.diff)
        (tmp / MARKER).write_text(json.dumps({"commit": src.commit, "dirty": src.dirty,
                                              "snapshot": sid, "files": len(names)}) + "\n")
        try:
            os.rename(tmp, dest)
        except OSError:  # another sweep made the same snapshot first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Snapshot(sid, dest)


def job_environment(snap: Snapshot) -> dict[str, str]:
    """Environment for a process that must import the snapshot's code, not the checkout's."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(snap.path) + (os.pathsep + path if path else "")}
