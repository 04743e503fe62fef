"""LSQ: hand-computed forward, STE and step-size gradient (paper eq. 3), init, export, options."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import tiny_cfg
from harness.run import trainer
from methods.base import UserError, decode, get
from methods.lsq import LsqWeight, lsq_init, lsq_quantize, lsq_range

# 2-bit signed: Q_N = 2, Q_P = 1; s = 0.5
V = [-2.0, -1.0, -0.6, -0.25, 0.0, 0.2, 0.3, 0.5, 1.0]
# v/s = -4, -2, -1.2, -0.5, 0, 0.4, 0.6, 1, 2 -> clip to [-2, 1] -> round (half to even)
Q = [-2, -2, -1, 0, 0, 0, 1, 1, 1]
INSIDE = [0, 0, 1, 1, 1, 1, 1, 0, 0]             # strictly -2 < v/s < 1
DS = [-2, -2, 0.2, 0.5, 0.0, -0.4, 0.4, 1, 1]    # eq. 3: -Q_N | round(v/s) - v/s | Q_P


def paper_grads(v, s, qn, qp, c):
    """Eq. 3 and the STE written independently with numpy (per-tensor step)."""
    x = np.asarray(v, dtype=np.float64) / s
    inside = (x > -qn) & (x < qp)
    ds = np.where(x <= -qn, -qn, np.where(x >= qp, qp, -x + np.round(x)))
    return c * inside, float((c * ds).sum())


def test_ranges():
    assert lsq_range(2) == (2, 1) and lsq_range(3) == (4, 3) and lsq_range(8) == (128, 127)
    assert lsq_range(2, signed=False) == (0, 3)


def test_forward_and_gradients_by_hand():
    v = torch.tensor(V, requires_grad=True)
    s = torch.tensor(0.5, requires_grad=True)
    y = lsq_quantize(v, s, 2, grad_scale=1.0)
    assert y.tolist() == [0.5 * q for q in Q]
    y.sum().backward()
    assert v.grad.tolist() == INSIDE
    assert s.grad.item() == pytest.approx(sum(DS), abs=1e-6)   # -1.3


def test_step_gradient_matches_the_paper_formula_with_its_scale():
    rng = np.random.default_rng(0)
    v = rng.normal(0, 1, 50)
    c = rng.normal(0, 1, 50)
    for bits, s in ((2, 0.7), (3, 0.3), (4, 0.15)):
        qn, qp = 2 ** (bits - 1), 2 ** (bits - 1) - 1
        vt = torch.tensor(v, requires_grad=True)
        st = torch.tensor(s, dtype=torch.float64, requires_grad=True)
        (lsq_quantize(vt, st, bits) * torch.tensor(c)).sum().backward()
        gv, gs = paper_grads(v, s, qn, qp, c)
        assert np.allclose(vt.grad.numpy(), gv)
        assert st.grad.item() == pytest.approx(gs / math.sqrt(50 * qp), rel=1e-9)


def test_per_channel_step_gradient():
    v = torch.tensor([V[:3], V[3:6]]).reshape(2, 3, 1, 1).requires_grad_(True)
    s = torch.tensor([0.5, 0.5], requires_grad=True)
    lsq_quantize(v, s, 2).sum().backward()   # g = 1/sqrt(3 * 1) per channel
    want = [sum(DS[:3]) / math.sqrt(3), sum(DS[3:6]) / math.sqrt(3)]
    assert s.grad.tolist() == pytest.approx(want, abs=1e-6)


def test_unsigned_range():
    y = lsq_quantize(torch.tensor([-1.0, 0.4, 1.0, 5.0]), torch.tensor(0.5), 2, signed=False)
    assert y.tolist() == [0.0, 0.5, 1.0, 1.5]   # Q_N = 0, Q_P = 3


def test_one_bit_is_undefined():
    with pytest.raises(ValueError, match="Q_P"):
        lsq_quantize(torch.ones(3), torch.tensor(1.0), 1)
    with pytest.raises(UserError, match="w_bits"):
        tiny_cfg("lsq", w_bits=1)


def test_paper_init():
    w = torch.tensor([[1.0, -3.0], [0.5, 0.5]])   # mean|w| = 1.25; per channel 2.0, 0.5
    assert lsq_init(w, 2, False).item() == 2.5
    assert lsq_init(w, 4, True).tolist() == pytest.approx([4 / math.sqrt(7), 1 / math.sqrt(7)])


def test_export_codes_levels_scale():
    opt = get("lsq").parse_options({})
    wq = LsqWeight(torch.tensor(V).reshape(1, 9), 2, opt)
    with torch.no_grad():
        wq.step.fill_(0.5)
    e = wq.export()
    assert e["codes"].tolist() == [[q + 2 for q in Q]] and e["codes"].dtype == torch.uint8
    assert e["levels"].tolist() == [-2.0, -1.0, 0.0, 1.0] and e["scale"].item() == 0.5
    assert torch.equal(decode(e["codes"], e["levels"], e["scale"]), wq().detach())


def test_step_is_a_quantizer_parameter(tmp_path):
    t = trainer.Trainer(tiny_cfg("lsq", w_bits=2, sets=["method.granularity=channel"]), tmp_path)
    t.build()
    kinds = {id(p): g["kind"] for g in t.optimizer.param_groups for p in g["params"]}
    wqs = [m for m in t.model.modules() if isinstance(m, LsqWeight)]
    assert wqs and all(kinds[id(m.step)] == "quant" and kinds[id(m.weight)] == "weight"
                       and m.step.shape == (m.weight.shape[0],) for m in wqs)


def test_options_are_checked():
    with pytest.raises(UserError, match="method.granularity"):
        tiny_cfg("lsq", sets=["method.granularity=group"])
    with pytest.raises(UserError, match="method.grad_scale"):
        tiny_cfg("lsq", sets=["method.grad_scale=2"])
    with pytest.raises(UserError, match="method.init"):
        tiny_cfg("lsq", sets=["method.init=1"])
