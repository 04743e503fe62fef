"""`python -m harness run`: one run from flags, a config file or a run's own config.json."""
from __future__ import annotations

import shlex
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
    """`python -m harness run`: exit 0 completed, 1 failed, 2 a mistake in what was asked
    (another process already training --out included), 3 diverged, 130 interrupted by Ctrl-C,
    143 by SIGTERM (both resumable)."""
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
    except (Interrupted, KeyboardInterrupt) as e:  # SIGTERM: 143; Ctrl-C: 130
        print(f"{args.out}: interrupted; resume it with `python -m harness run --resume "
              f"{shlex.quote(args.out)}` (or re-run the same command)", file=sys.stderr)
        return 143 if isinstance(e, Interrupted) else 130
    finally:
        restore_sigterm(before)
    if summary.status == "completed":
        if Dist.from_env().main:
            title = get_task(summary.task).headline().title
            print(f"{args.out}: completed, final deployed {title} {summary.score_text()}")
        return 0
    if summary.status == "running":  # its lock is held: nothing was done, nothing failed
        raise UserError("--out", f"{args.out!r} is being trained by another process right now; "
                        "wait for it to finish (then this command has nothing to do) or choose "
                        "another --out")
    return 3 if summary.status == "diverged" else 1
