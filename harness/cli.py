"""python -m harness {run, export, sweep, status, cancel, report, bench, config, show, selftest}.

Every subcommand's options are declared here; its implementation lives in its own module
and is imported only when that subcommand runs (``COMMANDS``), so `status` never waits for
torch and each module imports what it needs at its top. User mistakes (UserError) print one
line `error: <field>: <what and the fix>` and exit 2.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from typing import Any

from harness.config import RUN_FLAGS
from harness.errors import UserError, each

# subcommand -> (module, function, one-line help)
COMMANDS = {
    "run": ("harness.run.command", "cmd_run",
            "train one run into RUN_DIR (resumes if interrupted)"),
    "export": ("harness.deploy.export", "cmd_export",
               "write RUN_DIR/deployed.pt, bit-packed weights (and ONNX), and check each"),
    "sweep": ("harness.study.sweep", "cmd_sweep",
              "expand a study spec and submit the runs not yet completed"),
    "status": ("harness.study.status", "cmd_status",
               "states of a study's runs, failures and job ids"),
    "cancel": ("harness.study.status", "cmd_cancel", "cancel a study's queued and running jobs"),
    "report": ("harness.report", "cmd_report",
               "tables, figures and reviewer answers from a study's run records"),
    "bench": ("harness.tools.bench", "cmd_bench",
              "time and memory of every method vs a bare PyTorch loop"),
    "config": ("harness.tools.describe", "cmd_config",
               "every config key with its type, default, allowed values and meaning"),
    "show": ("harness.tools.describe", "cmd_show",
             "a run's state, code, config off its defaults and epoch history"),
    "selftest": ("harness.tools.selftest", "cmd_selftest",
                 "prove the training path on a device (GPU): every method trains, deploys as "
                 "exported and repeats; epoch times, step ratios, DDP"),
}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line and exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        name = self.prog.removeprefix("python -m harness").strip()
        see = f"python -m harness {name} --help" if name else "python -m harness --help"
        sys.stderr.write(f"error: {message} (see `{see}`)\n")
        sys.exit(2)


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only when it says something: not for flags whose default is
    "not given" (None, False, []) and not twice when the help already names it."""

    def _get_help_string(self, action):
        help_ = action.help or ""
        if "default" in help_ or action.default in (None, False, [], argparse.SUPPRESS):
            return help_
        return super()._get_help_string(action)


def _registries(wanted: bool) -> dict[str, Any]:
    """Choices for `run --help`, read from the registries (only then: the registries load
    the methods and networks, and torch), through the module that describes them."""
    if not wanted:
        return {"method": "(registry)", "model": "(registry)", "dataset": "(registry)"}
    return importlib.import_module("harness.tools.describe").run_help_names()


def _add_run(sub, names: dict[str, str]) -> None:
    p = sub.add_parser("run", help=COMMANDS["run"][2], description=COMMANDS["run"][2]
                       + ". Flags left out take the config defaults (`--set KEY=VALUE` reaches "
                       "every key).")
    for flag, key, typ, help_ in RUN_FLAGS:
        if "default" not in help_ and key in names.get("defaults", {}):
            help_ += f" (default: {names['defaults'][key]})"
        p.add_argument(flag, dest=key, type=typ, default=None, help=help_.format(**names))
    p.add_argument("--download", dest="data.download", action="store_const", const=True,
                   default=None, help="cifar10/100: download with torchvision if missing")
    p.epilog = "Every config key, its default and its allowed values: python -m harness config"
    p.add_argument("--config", help="TOML/JSON file with config keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. --set model.width=0.5 --set method.scaling=channel")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (re-running the same "
                   "command resumes it)")
    p.add_argument("--resume", metavar="RUN_DIR", help="resume (or repair) the run in RUN_DIR "
                   "with its own config.json; --set may change only keys outside the run id "
                   "(device, data.root, progress, loggers)")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help=COMMANDS["export"][2])
    p.add_argument("run_dir", metavar="RUN_DIR", help="a completed run's directory")
    p.add_argument("--device", default=None, help="device for the check (default: the run's)")
    p.add_argument("--format", choices=("torch", "onnx"), default="torch",
                   help="torch: deployed.pt and the bit-packed deployed_packed.zip; onnx: also "
                        "deployed.onnx, run with onnxruntime over the test set and compared")


def _add_sweep(sub, executors: tuple[str, ...]) -> None:
    p = sub.add_parser("sweep", help=COMMANDS["sweep"][2])
    p.add_argument("spec", metavar="STUDY.toml", help="the study spec (see studies/)")
    p.add_argument("--executor", choices=("auto",) + executors, default="auto",
                   help="where runs execute: SLURM job arrays, local worker processes, or "
                        "this process (debug); auto = slurm when a SLURM controller answers, "
                        "else local")
    p.add_argument("--scale", default=None, help="scale profile, e.g. smoke (default: full)")
    p.add_argument("--dry-run", action="store_true", help="validate and print; submit nothing")
    p.add_argument("--json", action="store_true",
                   help="with --dry-run: one JSON object per run on stdout (id, variant, cell, "
                        "epochs, seed, the resolved config); the plan goes to stderr")
    p.add_argument("--retry-failed", action="store_true", help="also resubmit failed runs")
    p.add_argument("--wait", action="store_true", help="slurm: block until the jobs finish")
    p.add_argument("--results", default="results", help="parent of the study directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a recipe key for every run (data.root=DIR), or a key of the spec's "
                        "own tables, checked as the file is: grid.seeds=[0,1], "
                        "executor.local_concurrency=1, variants.slb.options.bn=\"none\"")
    p.add_argument("--only", action="append", default=[], metavar="KEY=V1,V2",
                   help="keep only these final runs (and the trials and sources they need): "
                        "variant=slb,ste, bits=W1/A32 (or W1..W2/A32), epochs=4, seed=0,1")
    p.add_argument("--max-runs", type=int, default=None, metavar="N",
                   help="the most runs the spec may expand to (default 100000)")
    for name in ("status", "cancel"):
        q = sub.add_parser(name, help=COMMANDS[name][2])
        q.add_argument("study_dir", metavar="STUDY_DIR", help="results/<study>")
    q = sub.choices["status"]
    q.add_argument("--runs", action="store_true",
                   help="also list every run: state, epoch, headline score")
    q.add_argument("--sort", choices=("run", "variant", "cell", "state", "epoch", "score"),
                   default="run", help="--runs order (score and epoch: highest first)")


def _add_report(sub) -> None:
    p = sub.add_parser("report", help=COMMANDS["report"][2])
    p.add_argument("study_dir", metavar="STUDY_DIR", help="results/<study>")
    p.add_argument("--out", metavar="DIR", help="output folder (default STUDY_DIR/report)")
    p.add_argument("--reference", metavar="CSV",
                   help="reported numbers (method,dataset,model,w_bits,a_bits,top1[,source]); "
                        "default: study.toml [report] reference")
    p.add_argument("--reference-dataset", metavar="NAME",
                   help="dataset label to match in the reference CSV (e.g. cifar10 when the "
                        "data is the imagefolder copy)")
    p.add_argument("--ours", metavar="METHOD",
                   help="method compared with every baseline (default: study.toml [report] "
                        "ours; with neither, the report says so and makes no comparisons)")
    p.add_argument("--jobs", type=int, default=0,
                   help="processes reading records and drawing figures (0 = one per core, "
                        "at most 4; 1 = none)")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help=COMMANDS["bench"][2])
    p.add_argument("--model", default="resnet20", help="model to time")
    p.add_argument("--width", type=float, default=1.0, help="model width multiplier")
    p.add_argument("--methods", nargs="*", default=None, help="default: every registered one")
    p.add_argument("--bits", nargs="*", type=int, default=[1, 2, 4], help="weight bit widths")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size")
    p.add_argument("--rounds", type=int, default=10,
                   help="rounds; each round times every variant once, in a rotating order")
    p.add_argument("--steps", type=int, default=2, help="timed steps per variant and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--memory", choices=("held", "rss"), default="held",
                   help="CPU peak memory: what training holds (parameters, grads, optimizer "
                        "state, buffers, tensors saved for backward), or also the peak RSS "
                        "growth in a fresh process per variant (slow; allocator and thread "
                        "overheads of ~250 MB dominate it at CIFAR sizes)")
    p.add_argument("--what", choices=("train", "report", "spec", "all"), default="train",
                   help="time training steps, the report over synthetic records, the plan "
                        "(sweep --dry-run) of a synthetic 10^5-run spec, or all three")
    p.add_argument("--report-runs", type=int, default=1000,
                   help="synthetic run records for --what report")
    p.add_argument("--out", default="results/bench", help="folder for bench.csv and bench.md")


def _add_inspect(sub) -> None:
    p = sub.add_parser("config", help=COMMANDS["config"][2])
    p.add_argument("--method", default=None,
                   help="list this method's options (method.<option> keys) instead")
    p = sub.add_parser("show", help=COMMANDS["show"][2])
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    p.add_argument("--all", action="store_true",
                   help="every config key (not only those off their default), every metrics "
                        "column and every epoch")


def _add_selftest(sub) -> None:
    p = sub.add_parser("selftest", help=COMMANDS["selftest"][2],
                       description=COMMANDS["selftest"][2] + ". Writes OUT/selftest-<time>-"
                       "<device>/selftest.{json,md}; exit 1 when a check failed.")
    p.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="CIFAR-10: the official python pickles or the JPEG ImageFolder copy "
                        "(train/, test/); the dataset is detected from it")
    p.add_argument("--dataset", default=None,
                   help="override the detection, e.g. digits (built in) for a CPU run")
    p.add_argument("--download", action="store_true",
                   help="fetch CIFAR-10 into --data-root with torchvision when missing")
    p.add_argument("--model", default="resnet20", help="model of every run")
    p.add_argument("--width", type=float, default=1.0, help="model width multiplier")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size")
    p.add_argument("--epochs", type=int, default=1,
                   help="epochs of each check run (1 = 391 steps on CIFAR-10)")
    p.add_argument("--train-images", type=int, default=0,
                   help="class-balanced training subset; 0 = the whole training set")
    p.add_argument("--test-images", type=int, default=0, help="test subset; 0 = all")
    p.add_argument("--methods", nargs="*", default=None, help="default: every registered one")
    p.add_argument("--timing-epochs", type=int, default=2,
                   help="timed fp epochs per switch setting (after one warm-up epoch)")
    p.add_argument("--bench-rounds", type=int, default=10, help="bench rounds for the ratios")
    p.add_argument("--bench-steps", type=int, default=2, help="bench steps per round")
    p.add_argument("--bench-bits", nargs="*", type=int, default=[1, 2, 4],
                   help="weight bits the ratios cover")
    p.add_argument("--skip", nargs="*", default=[],
                   choices=("train", "switches", "epoch", "ratios", "ddp", "packing", "compile"),
                   help="sections to leave out (compile: the torch.compile variants); the "
                        "summary lists what was skipped")
    p.add_argument("--ddp-timeout", type=float, default=900,
                   help="seconds the 2-process DDP check may take")
    p.add_argument("--packing-ks", nargs="*", type=int, default=[1, 2, 4, 8],
                   help="runs at once on the device the packing section measures")
    p.add_argument("--packing-steps", type=int, default=50,
                   help="timed training steps of each process in the packing section")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key for every run, e.g. --set optim.lr=0.05")
    p.add_argument("--out", default="results/selftest", help="parent folder of the summary")


def build_parser(help_wanted: bool = True) -> Parser:
    parser = Parser(prog="python -m harness",
                    description="slbench: matched-budget low-bit quantization benchmarks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser,
                                metavar="COMMAND")
    _add_run(sub, _registries(help_wanted))
    _add_export(sub)
    _add_sweep(sub, ("slurm", "local", "debug"))
    _add_report(sub)
    _add_bench(sub)
    _add_inspect(sub)
    _add_selftest(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:  # a deleted working folder fails later, deep in a library (torch's MKL), otherwise
        os.getcwd()
    except FileNotFoundError:
        print("error: the current folder no longer exists (deleted or moved while this shell "
              "was in it): cd to an existing folder and run the command again", file=sys.stderr)
        return 2
    wants_run_help = argv[:1] == ["run"] and any(a in ("-h", "--help") for a in argv)
    parser = build_parser(help_wanted=wants_run_help)
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the subcommand's own parser, so the hint points at its --help
        parser._subparsers._group_actions[0].choices[args.command].error(
            f"unrecognized arguments: {' '.join(extra)}")
    module, function, _ = COMMANDS[args.command]
    try:
        return getattr(importlib.import_module(module), function)(args)
    except UserError as e:
        for one in each(e):  # several mistakes found at once: one line each
            print(f"error: {one}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM in a command that handles it
        print(f"interrupted: {e}" if str(e) else "interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except OSError as e:  # the machine said no: a full disk, a read-only folder, permissions
        print(f"error: {os_fault(e)}", file=sys.stderr)
        return 1


def os_fault(e: OSError) -> str:
    """One line for an OS fault, naming the file and what to do; records are written
    atomically, so the last good ones are kept."""
    where = f"{e.filename}: " if e.filename else ""
    what = e.strerror or str(e) or type(e).__name__
    fix = {errno.ENOSPC: "free space", errno.EDQUOT: "free space (disk quota)",
           errno.EROFS: "the file system is read-only: choose a writable folder",
           errno.EACCES: "check the permissions", errno.EPERM: "check the permissions",
           errno.ENOTDIR: "a path component is a file, not a folder",
           errno.EISDIR: "move the folder away",
           errno.EFBIG: "a file size limit (ulimit -f) or the file system's: raise it"
           }.get(e.errno or 0, "fix it")
    return (f"{where}{what} ({fix}); nothing was half-written: the last good records are "
            "kept, re-run the command when fixed")
