"""The report reads only records: no module of harness/report/ imports torch (nor the method
code that needs it), so `python -m harness report` starts without it. Each module is imported
in a fresh interpreter, where nothing else has imported torch first."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

MODULES = sorted(p.stem for p in (ROOT / "harness" / "report").glob("*.py"))


def test_the_module_list_is_the_package():
    assert {"__init__", "load", "costs", "render", "questions", "tables"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_report_module_imports_no_torch(module):
    name = "harness.report" if module == "__init__" else f"harness.report.{module}"
    code = (f"import sys, {name}\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')\n"
            "             or m == 'methods.base')\n"
            "print(','.join(bad))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "", f"{name} imports {res.stdout.strip()}"
