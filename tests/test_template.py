"""methods/_template.py (the starting point of the method-writing guide) is real, working code:
registered for this test only, it trains, deploys and exports like every method."""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_cfg
from harness.deploy.export import export_and_check
from harness.run import rundir
from methods import _template as template
from methods.base import REGISTRY, load_all, register


@pytest.fixture
def ternary():
    load_all()
    assert "ternary" not in REGISTRY          # the template is never registered by itself
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
