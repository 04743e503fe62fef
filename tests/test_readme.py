"""Every shell and TOML block of the README works as written (issue 26, item 2).

A block preceded by ``<!-- test: run -->`` is run, command by command, in a scratch folder
(the first study, one run: what a new user types first). Every other harness command is
checked without the work: `sweep` with ``--dry-run``, `run` by resolving its config, the
others by their flags; `make TARGET` must name a target of the Makefile. TOML blocks are
study specs: a whole spec (it has ``[study]``) is read with the spec loader and its runs
expanded; a snippet is read on top of the spec before it. A command the test does not know
fails it, so a new kind of line in the README gets a check too.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT
from harness import config
from harness.cli import build_parser, main
from harness.run import resolve
from harness.study import spec as study_spec

FENCE = re.compile(r"(<!-- test: run -->\n)?```(bash|sh|toml)\n(.*?)```", re.S)
HARNESS = re.compile(r"^(?:\.venv/bin/)?python3? -m harness ")


def blocks() -> list[tuple[str, bool, str]]:
    """(language, whether to run it, text) of every shell and TOML block, in order."""
    text = (ROOT / "README.md").read_text()
    return [(m.group(2), bool(m.group(1)), m.group(3)) for m in FENCE.finditer(text)]


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            out.append(shlex.join(words))
    return out


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) \
            else v
    return out


def toml_text(d: dict) -> str:
    """A spec dict as TOML (json for values: TOML accepts JSON strings, numbers, lists and
    inline tables written as { k = v })."""
    def value(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + " }"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return repr(v)

    return "\n".join(f'"{k}" = {value(v)}' for k, v in d.items()) + "\n"


def check_toml(text: str, work: Path, last: dict | None) -> dict:
    """Read a spec block with the spec loader (a snippet on top of the last spec)."""
    d = tomllib.loads(text)
    first = text.lstrip().splitlines()[0]
    name = first.removeprefix("#").strip() if first.startswith("# studies/") else None
    if "study" not in d:
        assert last is not None, "a TOML snippet before any whole spec"
        d = deep_merge(last, d)
        path = work / "studies" / "snippet.toml"
        path.write_text(toml_text(d))
    else:
        path = work / (name or "studies/block.toml")
        path.write_text(text)
    warnings: list[str] = []
    study = study_spec.load_spec(path, data_warnings=warnings)  # raises on any problem
    assert study.runs, path
    return d


def check_command(cmd: str, run_it: bool, work: Path, monkeypatch) -> None:
    words = shlex.split(cmd)
    if words[0] == "make":
        target = words[1]
        assert re.search(rf"^{re.escape(target)}:", (ROOT / "Makefile").read_text(), re.M), cmd
        return
    if words[0] == "export":
        key, value = words[1].split("=", 1)
        monkeypatch.setenv(key, os.path.expanduser(value))
        return
    if words[0] == "python3" and words[1].startswith("slurm/"):
        assert (ROOT / words[1]).is_file(), cmd
        return
    assert HARNESS.match(cmd), f"the README test does not know this command: {cmd}"
    args = [os.path.expanduser(os.path.expandvars(w)) for w in words[3:]]
    if run_it:
        assert main(args) == 0, cmd
        return
    parsed = build_parser(help_wanted=False).parse_args(args)  # flags as the CLI reads them
    if parsed.command == "sweep":
        dry = args + ([] if "--dry-run" in args else ["--dry-run"])
        assert main(dry + ["--results", str(work / "results")]) == 0, cmd
    elif parsed.command == "run":
        flags = {key: getattr(parsed, key) for _, key, _, _ in config.RUN_FLAGS}
        resolve.build(parsed.config, flags, parsed.set)  # the config a run would take


def test_every_shell_and_toml_block_of_the_readme(tmp_path, monkeypatch, capsys):
    found = blocks()
    assert sum(run for _, run, _ in found) >= 2 and sum(lang == "toml" for lang, _, _ in found) >= 2
    work = tmp_path / "clone"
    shutil.copytree(ROOT / "studies", work / "studies")
    monkeypatch.chdir(work)
    last = None
    for lang, run_it, text in found:
        if lang == "toml":
            last = check_toml(text, work, last)
            continue
        for cmd in commands(text):
            check_command(cmd, run_it, work, monkeypatch)
    capsys.readouterr()
    assert (work / "results" / "mine" / "report" / "report.md").is_file()
    assert (work / "results" / "runs" / "slb-w1" / "deployed.onnx").is_file()


@pytest.mark.parametrize("where", ["README.md"])
def test_no_path_outside_the_repository(where):
    text = (ROOT / where).read_text()
    assert "../shared" not in text and "/work/" not in text
