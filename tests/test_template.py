"""methods/_template.py (the starting point of the method-writing guide) is real, working code:
registered for this test only, it trains, deploys and exports like every method."""
from __future__ import annotations

import pytest
import torch

from conftest import ROOT, tiny_cfg
from harness.deploy.export import export_and_check
from harness.run import rundir
from methods import _template as template
from methods.base import REGISTRY, load_all, register


@pytest.fixture
def ternary():
    load_all()
    # the template is never registered by itself; a copy that kept its name would be
    assert "ternary" not in REGISTRY, (
        f"{REGISTRY['ternary'].__module__.replace('.', '/')}.py registers name = 'ternary', "
        "the name of methods/_template.py's example: set `name` to the file's name")
    register(template.Ternary)
    yield
    del REGISTRY["ternary"]


def test_ternary_golden_values():
    w = torch.tensor([-1.0, -0.2, 0.05, 0.3, 2.0])
    t, alpha = template.ternary(w, 0.7)
    # delta = 0.7 * mean|w| = 0.7 * 0.71 = 0.497: only -1.0 and 2.0 survive
    assert t.tolist() == [-1.0, 0.0, 0.0, 0.0, 1.0]
    assert alpha.item() == pytest.approx(1.5)


def test_the_template_trains_deploys_and_exports(ternary, tmp_path):
    s = rundir.run(tiny_cfg("ternary"), tmp_path, echo=lambda m: None)
    assert s.status == "completed"
    acc, want = export_and_check(tmp_path, echo=lambda m: None)
    assert acc == want


def test_a_copy_is_told_to_rename_and_where_its_bad_options_go(ternary, monkeypatch):
    import test_method_options

    copy = type("Ternary", (template.Ternary,), {"__module__": "methods.mine"})
    with pytest.raises(RuntimeError) as e:  # kept name = "ternary"
        register(copy)
    assert ("method name 'ternary' registered twice (methods/_template.py and methods/mine.py)"
            in str(e.value)) and "rename it" in str(e.value)
    copy.name = "mine"
    monkeypatch.setitem(REGISTRY, "mine", copy)
    with pytest.raises(pytest.fail.Exception) as e:
        test_method_options.test_the_table_covers_every_method_and_every_option()
    lines = (ROOT / "tests" / "test_method_options.py").read_text().splitlines()
    end = lines.index("]", lines.index("BAD = [")) + 1  # the line before which cases go
    assert str(e.value).startswith(f"methods/mine.py has no bad-option case: add a line per "
                                   f"option to BAD before tests/test_method_options.py:{end}")
