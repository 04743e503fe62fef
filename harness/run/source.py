"""The code a run ran: the harness commit, whether the source differed from it (and how),
and snapshots of the source taken when a study is submitted.

"Source" is the code a run executes: ``harness/``, ``methods/`` and ``pyproject.toml``,
tracked files and untracked (not git-ignored) ones alike, so a new method file that was
never committed still makes a run "-dirty" and appears in its saved diff.

A snapshot is a copy of that source in ``STUDY_DIR/snapshots/<id>/``, where ``id`` is a
hash of every file's path and content (identical code shares one snapshot). Queued jobs
run from it, so editing the checkout after ``sweep`` never changes what they run. The copy
carries ``SOURCE.json`` (commit, dirty, id, what was left out) and, when dirty,
``SOURCE.diff``; a run started from a snapshot reports those instead of asking git.

What a snapshot holds: links as links (never what they point to), no file over
``MAX_FILE_BYTES`` (left out with a warning), nothing inside a results, snapshot or run folder
wherever it lives (a folder holding SOURCE.json, manifest.json or summary.json, or named
results/ or snapshots/), at most ``MAX_SNAPSHOT_BYTES`` in all.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness import files
from harness.errors import UserError

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
                           errors="surrogateescape", timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout if p.returncode == 0 else None


# what a snapshot holds (README, Limits): files up to MAX_FILE_BYTES (larger ones are left
# out with a warning), MAX_SNAPSHOT_BYTES in all; never results or snapshot folders
MAX_FILE_BYTES = 2**20
MAX_SNAPSHOT_BYTES = 64 * 2**20
# a folder holding one of these is a snapshot (SOURCE.json), a study (manifest.json) or a run
# (summary.json): results, wherever they live, are never source
RESULT_MARKERS = (MARKER, "manifest.json", "summary.json")
SKIPPED_DIRS = ("__pycache__", "results", "snapshots")


def _listed(root: Path, untracked_only: bool = False) -> list[str] | None:
    """Relative paths under the source paths: tracked and untracked (not ignored) from git,
    or every file (no links followed) outside a git checkout."""
    listed = _git("ls-files", "-z", "-o" if untracked_only else "-co", "--exclude-standard",
                  "--", *SOURCE_PATHS, root=root)  # -z: names as they are, never quoted
    if listed is not None:
        return sorted(n for n in set(listed.split("\0")) if n)
    if untracked_only:
        return None
    names = []
    for top in SOURCE_PATHS:
        base = root / top
        if base.is_file() or base.is_symlink():
            names.append(top)
        for folder, dirs, found in os.walk(base, followlinks=False):
            names += [str((Path(folder) / f).relative_to(root)) for f in found]
            names += [str((Path(folder) / d).relative_to(root)) for d in dirs
                      if (Path(folder) / d).is_symlink()]  # a link to a folder: a link
    return sorted(names)


def _why_left_out(root: Path, name: str, seen: dict[Path, bool]) -> str:
    """Why ``name`` is not source ("" when it is): in a results or snapshot folder, not a
    regular file or link, or too large."""
    for parent in list((root / name).relative_to(root).parents)[:-1]:
        if parent not in seen:
            d = root / parent
            seen[parent] = parent.name in SKIPPED_DIRS or any(
                (d / m).exists() for m in RESULT_MARKERS)
        if seen[parent]:
            return f"inside {parent}/, a results, snapshot or cache folder"
    try:
        st = os.lstat(root / name)
    except OSError:
        return "gone"
    if stat.S_ISLNK(st.st_mode):
        return ""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size > MAX_FILE_BYTES:
        return f"{st.st_size:,} bytes, over the limit of {MAX_FILE_BYTES:,} for a source file"
    return ""


def survey(root: Path = REPO) -> tuple[list[str], list[dict[str, str]]]:
    """(source files, [{"path", "why"} of each file left out]) under ``root``."""
    seen: dict[Path, bool] = {}
    keep, left_out = [], []
    for name in _listed(root) or []:
        why = _why_left_out(root, name, seen)
        if why == "gone":
            continue
        (left_out.append({"path": name, "why": why}) if why else keep.append(name))
    return keep, left_out


def source_files(root: Path = REPO) -> list[str]:
    """Relative paths of the source files (tracked and untracked, not ignored; links as
    links), without results, snapshots and files over the size limit."""
    return survey(root)[0]


def _diff(root: Path) -> str:
    """Tracked changes against HEAD plus every untracked source file, as one patch (what a
    snapshot leaves out is left out here too)."""
    keep, left_out = survey(root)
    skip = [f":(exclude){e['path']}" for e in left_out]
    text = _git("diff", "HEAD", "--", *SOURCE_PATHS, *skip, root=root) or ""
    untracked = set(_listed(root, untracked_only=True) or [])
    for name in [n for n in keep if n in untracked]:
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


def _content(root: Path, name: str) -> bytes:
    """What a snapshot's id hashes for a file: its bytes, or a link's target."""
    path = root / name
    if path.is_symlink():
        return b"link:" + os.fsencode(os.readlink(path))
    return path.read_bytes()


def snapshot(parent: Path, root: Path = REPO, warn=None) -> Snapshot:
    """Copy the source into ``parent/<id>/`` (once per distinct content) and return it. Links
    are stored as links (what they point to is never copied); files over the size limit,
    results and snapshot folders are left out (``warn`` is told, SOURCE.json records them);
    a source over MAX_SNAPSHOT_BYTES in all is refused."""
    warn = warn or (lambda line: print(line, file=sys.stderr))
    names, left_out = survey(root)
    total = sum(os.lstat(root / n).st_size for n in names)
    if total > MAX_SNAPSHOT_BYTES:
        raise UserError("source", f"the source under {root} ({', '.join(SOURCE_PATHS)}) "
                        f"holds {total:,} bytes, over the snapshot limit of "
                        f"{MAX_SNAPSHOT_BYTES:,}; move data and results out of it")
    for e in left_out:
        warn(f"warning: code snapshot leaves out {e['path']} ({e['why']})")
    h = hashlib.sha256()
    for name in names:
        h.update(os.fsencode(name) + b"\0" + _content(root, name) + b"\0")
    sid = h.hexdigest()[:12]
    dest = Path(parent) / sid
    if (dest / MARKER).is_file():
        return Snapshot(sid, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{sid}.", dir=dest.parent))
    try:
        for name in names:  # into a fresh folder of our own, through the safe file layer
            if (root / name).is_symlink():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                os.symlink(os.readlink(root / name), tmp / name)
            else:
                files.atomic_write_bytes(tmp / name, (root / name).read_bytes(), tmp)
        src = state(root)
        if src.diff:
            files.atomic_write_text(tmp / DIFF, src.diff, tmp)
        files.atomic_write_text(tmp / MARKER, json.dumps({
            "commit": src.commit, "dirty": src.dirty, "snapshot": sid, "files": len(names),
            "left_out": left_out}) + "\n", tmp)
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
