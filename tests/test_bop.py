"""Bop: flip rule cases, moving average, schedules, optimizer routing, logging, options."""
from __future__ import annotations

import pytest
import torch

from conftest import metrics_without_timing, tiny_cfg
from harness.run import rundir, trainer
from methods.base import Progress, UserError, decode, get
from methods.bop import BopWeight, bop_flip, bop_update_m


def test_flip_rule_cases():
    tau = 0.25
    w = torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    m = torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.25, -0.25, 0.2500001, -0.2500001])
    # same sign and |m| > tau -> flip; opposite sign -> keep; m = 0 -> keep;
    # |m| == tau -> keep (strict); just above tau -> flip
    want = [-1.0, 1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, -1.0, 1.0]
    assert bop_flip(w, m, tau).tolist() == want


def test_zero_threshold_and_zero_momentum():
    w = torch.tensor([1.0, -1.0, 1.0])
    m = torch.tensor([0.0, 0.0, 1e-30])
    assert bop_flip(w, m, 0.0).tolist() == [1.0, -1.0, -1.0]


def test_moving_average():
    m = bop_update_m(torch.tensor([0.5, -0.5, 0.0]), torch.tensor([1.0, 1.0, -2.0]), 0.1)
    assert torch.allclose(m, torch.tensor([0.55, -0.35, -0.2]))


def test_init_is_sign_of_float_weights_and_step_uses_grad():
    wq = BopWeight(torch.tensor([[0.3, -0.2], [0.0, -1e-9]]), 1, "none")
    assert wq.weight.tolist() == [[1.0, -1.0], [1.0, -1.0]]      # sign(0) = +1
    assert torch.equal(wq.m, torch.zeros(2, 2))
    (wq() * torch.tensor([[2.0, -2.0], [-2.0, 0.5]])).sum().backward()
    flips = wq.step(gamma=0.5, tau=0.9)
    # m = 0.5 g = [[1, -1], [-1, 0.25]]: w*m = [[1, 1], [-1, -0.25]] -> flips where > 0.9
    assert wq.m.tolist() == [[1.0, -1.0], [-1.0, 0.25]]
    assert wq.weight.tolist() == [[-1.0, 1.0], [1.0, -1.0]]
    assert int(flips) == 2
    assert wq.weight.grad is None  # cleared: the recipe's zero_grad never reaches it


def test_channel_scale_forward_and_export():
    wq = BopWeight(torch.tensor([[0.5, -0.25], [-1.0, 3.0]]), 1, "channel")
    assert wq.scale.tolist() == [0.375, 2.0]               # mean |W_c| of the float init
    y = wq()
    assert y.tolist() == [[0.375, -0.375], [-2.0, 2.0]]
    e = wq.export()
    assert e["codes"].tolist() == [[1, 0], [0, 1]] and e["levels"].tolist() == [-1.0, 1.0]
    assert torch.equal(decode(e["codes"], e["levels"], e["scale"]), y.detach())
    y.sum().backward()
    assert wq.scale.grad.tolist() == [0.0, 0.0]            # sum of w per channel
    assert wq.weight.grad.tolist() == [[0.375, 0.375], [2.0, 2.0]]


def test_binary_weights_never_reach_the_recipe_optimizer(tmp_path):
    t = trainer.Trainer(tiny_cfg("bop", sets=["method.scaling=channel"]), tmp_path)
    t.build()
    in_opt = {id(p): g["kind"] for g in t.optimizer.param_groups for p in g["params"]}
    wqs = [m for m in t.model.modules() if isinstance(m, BopWeight)]
    assert wqs
    for m in wqs:
        assert id(m.weight) not in in_opt
        assert in_opt[id(m.scale)] == "quant"
    t.train_epoch(0)
    for m in wqs:
        assert set(m.weight.unique().tolist()) <= {-1.0, 1.0} and m.weight.grad is None


def test_step_schedule_decays_gamma_and_tau():
    cls = get("bop")
    opt = cls.parse_options({"schedule": "step", "milestones": [1, 2], "gamma": 1e-3,
                             "tau": 1e-6, "gamma_decay": 0.1, "tau_decay": 0.5})
    method = cls(opt, 1)
    at = [method.hyper(Progress(0, 4, step, 10)) for step in (0, 9, 10, 19, 20, 39)]
    g = [a[0] for a in at]
    t = [a[1] for a in at]
    assert g == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])
    assert t == pytest.approx([1e-6, 1e-6, 5e-7, 5e-7, 2.5e-7, 2.5e-7])
    const = cls(cls.parse_options({}), 1)
    assert const.hyper(Progress(3, 4, 39, 10)) == (1e-4, 1e-8)   # larq defaults


def test_flip_ratio_is_logged_per_epoch(tmp_path):
    rundir.run(tiny_cfg("bop", epochs=1, sets=["method.gamma=0.01", "method.tau=1e-6"]),
              tmp_path, echo=lambda s: None)
    df = metrics_without_timing(tmp_path)
    assert len(df) == 1
    assert ((df["flip_ratio"] > 0) & (df["flip_ratio"] < 1)).all()


def test_only_one_bit_and_options_are_checked():
    for bits in (2, 4, 8):
        with pytest.raises(UserError, match="w_bits"):
            tiny_cfg("bop", w_bits=bits)
    bad = [(["method.schedule=step"], "method.milestones"),
           (["method.milestones=[5]"], "method.milestones"),
           (["method.schedule=step", "method.milestones=[5, 2]"], "method.milestones"),
           (["method.gamma=0"], "method.gamma"), (["method.gamma=2"], "method.gamma"),
           (["method.tau=-1"], "method.tau"), (["method.tau_decay=0"], "method.tau_decay"),
           (["method.schedule=cosine"], "method.schedule"), (["method.lr=1"], "method.lr")]
    for sets, field in bad:
        with pytest.raises(UserError, match=field):
            tiny_cfg("bop", sets=sets)
