"""The house's structure as the README draws it: import contracts (import-linter, see
.importlinter), commands that start without torch, modules and functions of a readable
size, no cryptic module aliases, no private names borrowed across modules, and a "where to
touch" table whose paths exist."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

SOURCES = sorted(p for folder in ("harness", "methods") for p in (ROOT / folder).rglob("*.py"))
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def test_import_contracts_hold():
    """Layers (cli > tools > study, deploy > report > run > costs > records > tasks > methods
    > config, files, dist > errors), and the report and the command line never load torch."""
    lint = Path(sys.executable).parent / "lint-imports"
    r = subprocess.run([str(lint), "--config", str(ROOT / ".importlinter")], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "broken" not in r.stdout.lower().replace("0 broken", "")


def _imports_torch(code: str, *args: str, cwd: Path = ROOT) -> tuple[bool, str]:
    """Run ``python -X importtime`` on code (``-c``) or a module command; True when torch
    was imported, with the output."""
    r = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=cwd,
                       capture_output=True, text=True, input=code)
    loaded = re.findall(r"\|\s+(torch(?:vision)?)(?:\.|\s*$)", r.stderr, re.M)
    return bool(loaded), r.stdout + r.stderr[-1500:]


@pytest.mark.parametrize("module", [
    "harness.cli", "harness.config", "harness.records", "harness.files", "harness.tasks.base",
    "harness.study.status", "harness.study.backends", "harness.run.job", "harness.run.procs",
    "harness.report"])
def test_modules_the_light_commands_need_load_without_torch(module):
    torch, out = _imports_torch("", "-c", f"import {module}")
    assert not torch, out


def test_help_status_and_report_never_import_torch(tmp_path):
    example = ROOT / "results" / "examples" / "example_cifar10_jpeg"
    for args in (["--help"], ["status", str(example)], ["report", "--help"], ["run", "--help"]):
        torch, out = _imports_torch("", "-m", "harness", *args)
        assert torch == (args == ["run", "--help"]), (args, out)


def test_no_module_or_function_is_too_long():
    too_long = []
    for path in SOURCES:
        text = path.read_text()
        rel = path.relative_to(ROOT)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {len(text.splitlines())} lines")
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{rel}:{node.lineno} {node.name}(): {n} lines")
    assert not too_long, "split these (at most 600 lines a module, 60 a function):\n" + \
        "\n".join(too_long)


def _own(name: str) -> bool:
    return name.split(".")[0] in ("harness", "methods")


def test_project_modules_are_imported_under_their_own_names():
    """`from harness.report import tables as T` makes grep useless: an alias of a project
    module must be a word (at least four characters, not all capitals)."""
    bad = []
    for path in SOURCES + sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
                for alias in node.names:
                    full = f"{module}.{alias.name}" if module else alias.name
                    if alias.asname and _own(full) and (len(alias.asname) < 4 or
                                                        alias.asname.isupper()):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {full} as "
                                   f"{alias.asname}")
    assert not bad, "\n".join(bad)


def test_no_module_imports_another_modules_private_names():
    bad = []
    for path in SOURCES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and node.module and _own(node.module):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno} from "
                                   f"{node.module} import {alias.name}")
    assert not bad, "\n".join(bad)


def test_the_readme_where_to_touch_table_names_paths_that_exist():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("| to add | touch |"):]
    section = section.split("\n\n", 1)[0]  # the table ends at a blank line or the file's end
    paths = set(re.findall(r"`((?:harness|methods|tests|studies)/[\w/<>.*-]+)`", section))
    assert len(paths) >= 8, paths
    missing = []
    for p in paths:
        concrete = p.replace("<name>", "slb").replace("<task>", "sr")
        if "*" in concrete or "<" in concrete:
            continue
        if not (ROOT / concrete.rstrip("/")).exists():
            missing.append(p)
    assert not missing, missing
    for row in ("a method", "a task", "a dataset", "a model", "an executor"):
        assert f"| {row} |" in section, row
