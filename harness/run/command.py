"""`python -m harness run`: one run from flags, a config file or a run's own config.json."""
from __future__ import annotations

import sys
from pathlib import Path

from harness.config import RUN_FLAGS
from harness.dist import Dist
from harness.errors import UserError, require
from harness.run import resolve
from harness.run.rundir import run
from harness.run.signals import Interrupted, raise_on_sigterm, restore_sigterm
from harness.tasks.base import get as get_task


def check_run_folder(out: Path) -> None:
    """--out must be a run folder (it holds config.json), a new folder or an empty one: the
    harness never writes its records into (or cleans up) a folder of the user's own."""
    if out.is_dir() and not (out / "config.json").exists() and any(out.iterdir()):
        raise UserError("--out", f"{str(out)!r} is neither a run folder (no config.json) nor "
                        "empty; choose a new or empty folder for the run")


def cmd_run(args) -> int:
    """`python -m harness run`: exit 0 completed, 1 failed, 3 diverged, 143 interrupted."""
    if args.resume:  # the run's own config; flags and --set may change what is not semantic
        require(not args.config and (not args.out or Path(args.out) == Path(args.resume)),
                "--resume", "takes the run's own config.json and directory; drop --config and "
                "--out")
        require((Path(args.resume) / "config.json").is_file(), "--resume",
                f"{args.resume!r} has no config.json; pass a run directory")
        args.config, args.out = str(Path(args.resume) / "config.json"), args.resume
    require(bool(args.out and args.out.strip()), "--out",
            "give a run directory, e.g. --out results/runs/mine (or --resume RUN_DIR)")
    check_run_folder(Path(args.out))
    flags = {key: getattr(args, key) for _, key, _, _ in RUN_FLAGS}
    flags["data.download"] = getattr(args, "data.download")
    cfg = resolve.build(args.config, flags, args.set)
    before = raise_on_sigterm()  # SIGTERM: the run ends interrupted with its last checkpoint
    try:
        summary = run(cfg, Path(args.out))
    except Interrupted:
        print(f"{args.out}: interrupted; resume it with `python -m harness run --resume "
              f"{args.out}` (or re-run the same command)", file=sys.stderr)
        return 143
    finally:
        restore_sigterm(before)
    if summary.status == "completed":
        if Dist.from_env().main:
            title = get_task(summary.task).headline().title
            print(f"{args.out}: completed, final deployed {title} {summary.score_text()}")
        return 0
    return 3 if summary.status == "diverged" else 1
