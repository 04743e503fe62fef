"""python -m harness {run, export, sweep, status, cancel, report, bench}.

User mistakes (UserError) print one line `error: <field>: <what and the fix>` and exit 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from methods.errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line and exit code 2."""

    def error(self, message: str):
        sys.stderr.write(f"error: {message} (see `python -m harness {self.prog.split()[-1]} "
                         f"--help`)\n")
        sys.exit(2)


RUN_FLAGS = [  # (flag, config key, type, help)
    ("--method", "method", str, "weight method: fp, ste, dorefa, ... (registry)"),
    ("--w-bits", "w_bits", int, "weight bits (default: the method's)"),
    ("--a-bits", "a_bits", int, "activation bits; 32 = no quantization"),
    ("--model", "model.name", str, "resnet20 | vgg_small | resnet18 | small_cnn"),
    ("--dataset", "data.name", str, "digits | cifar10 | cifar100 | imagefolder | mnist | "
                                    "fashion-mnist"),
    ("--data-root", "data.root", str, "dataset folder"),
    ("--epochs", "epochs", int, "training epochs"),
    ("--seed", "seed", int, "run seed"),
    ("--batch-size", "batch_size", int, "training batch size"),
    ("--lr", "optim.lr", float, "base learning rate"),
    ("--device", "device", str, "auto | cpu | cuda | cuda:N"),
]


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="train one run into RUN_DIR (resumes if interrupted)")
    for flag, key, typ, help_ in RUN_FLAGS:
        p.add_argument(flag, dest=key, type=typ, default=None, help=help_)
    p.add_argument("--download", dest="data.download", action="store_const", const=True,
                   default=None, help="cifar10/100: download with torchvision if missing")
    p.add_argument("--config", help="TOML/JSON file with config keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. --set model.width=0.5 --set method.scaling=channel")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")


def cmd_run(args) -> int:
    from harness import config as C
    from harness import train

    flags = {key: getattr(args, key) for _, key, _, _ in RUN_FLAGS}
    flags["data.download"] = getattr(args, "data.download")
    cfg = C.build(args.config, flags, args.set)
    train.raise_on_sigterm()  # SIGTERM: the run ends interrupted with its last checkpoint
    try:
        summary = train.run(cfg, Path(args.out))
    except train.Interrupted:
        print(f"{args.out}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 143
    status = summary.status
    if status == "completed":
        if train.Dist.from_env().main:
            print(f"{args.out}: completed, final deployed test accuracy "
                  f"{summary.final_test_acc:.2f}%")
        return 0
    return 3 if status == "diverged" else 1


def cmd_export(args) -> int:
    from harness.export import export_and_check

    acc, want = export_and_check(Path(args.run_dir), args.device)
    if acc != want:
        print(f"error: rebuilt network scores {acc!r}% but summary.json says {want!r}%",
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m harness",
                    description="slbench: matched-budget low-bit quantization benchmarks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_run(sub)
    p = sub.add_parser("export", help="write RUN_DIR/deployed.pt and check it rebuilds exactly")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--device", default=None)
    for extra in _extra_commands():
        extra(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args) if hasattr(args, "func") else COMMANDS[args.command](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM in a command that handles it
        print(f"interrupted: {e}" if str(e) else "interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


COMMANDS = {"run": cmd_run, "export": cmd_export}


def _extra_commands():
    """Sub-commands living in their own modules (sweep, report, bench) register here."""
    found = []
    for modname in ("harness.sweep", "harness.report", "harness.bench"):
        try:
            mod = __import__(modname, fromlist=["add_commands"])
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue
            raise
        found.append(mod.add_commands)
    return found
