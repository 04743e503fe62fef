"""Hand-computed golden values for ste, dorefa and the activation quantizers.

Expected numbers come from the papers' formulas written out here with Python's math module,
never from the code under test.
"""
from __future__ import annotations

import math

import pytest
import torch

from methods.act import dorefa_act, pact_quantize, sign_act
from methods.dorefa import dorefa_weight
from methods.ste import sign_ste

W = [[0.5, -0.3], [0.0, -1.5]]  # C_out = 2 filters of 2 weights; note w = 0 and |w| > 1


def _grad(fn, w):
    w = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    out = fn(w)
    out.sum().backward()
    return out.detach().flatten().tolist(), w.grad.flatten().tolist()


def test_ste_sign_no_scaling_clipped():
    q, g = _grad(lambda w: sign_ste(w, "none", clip=True), W)
    assert q == [1, -1, 1, -1]          # sign(0) = +1
    assert g == [1, 1, 1, 0]            # 1[|w| <= 1]


def test_ste_identity_gradient():
    _, g = _grad(lambda w: sign_ste(w, "none", clip=False), W)
    assert g == [1, 1, 1, 1]


def test_ste_layer_scaling():
    a = (0.5 + 0.3 + 0.0 + 1.5) / 4         # mean |W| = 0.575
    q, g = _grad(lambda w: sign_ste(w, "layer", clip=True), W)
    assert q == pytest.approx([a, -a, a, -a])
    assert g == pytest.approx([a, a, a, 0])


def test_ste_channel_scaling_bwn():
    a0, a1 = (0.5 + 0.3) / 2, (0.0 + 1.5) / 2   # 0.4 and 0.75
    q, g = _grad(lambda w: sign_ste(w, "channel", clip=True), W)
    assert q == pytest.approx([a0, -a0, a1, -a1])
    assert g == pytest.approx([a0, a0, a1, 0])


def test_dorefa_1bit_is_sign_times_mean_abs_with_identity_gradient():
    e = 0.575
    q, g = _grad(lambda w: dorefa_weight(w, 1), W)
    assert q == pytest.approx([e, -e, e, -e])
    assert g == [1, 1, 1, 1]


def test_dorefa_2bit_forward_and_gradient_through_tanh_and_max():
    flat = [0.5, -0.3, 0.0, -1.5]
    t = [math.tanh(v) for v in flat]
    m = max(abs(v) for v in t)              # attained at w = -1.5 (t negative)
    x = [ti / (2 * m) + 0.5 for ti in t]    # 0.7553, 0.3391, 0.5, 0.0
    codes = [round(xi * 3) for xi in x]     # Python's round is half-to-even, like torch
    assert codes == [2, 1, 2, 0]
    expected_q = [2 * c / 3 - 1 for c in codes]
    # dL/dx_i = 2 for L = sum W_q (STE through round); x_i = t_i/(2M) + 1/2, M = -t_3
    s = sum(t)
    dt = [1 / m] * 4
    dt[3] = 1 / m + s / m ** 2
    expected_g = [d * (1 - ti ** 2) for d, ti in zip(dt, t)]
    q, g = _grad(lambda w: dorefa_weight(w, 2), W)
    assert q == pytest.approx(expected_q)
    assert g == pytest.approx(expected_g, rel=1e-12)


def test_dorefa_kbit_levels():
    w = torch.linspace(-3, 3, 1001, dtype=torch.float64)
    for bits in (2, 3, 4):
        q = dorefa_weight(w, bits)
        levels = torch.tensor([-1 + 2 * i / (2 ** bits - 1) for i in range(2 ** bits)],
                              dtype=torch.float64)
        assert torch.allclose(q.unique(), levels)


def test_sign_activation_clipped_ste():
    q, g = _grad(sign_act, [-2.0, -0.5, 0.0, 0.7, 3.0])
    assert q == [-1, -1, 1, 1, 1]
    assert g == [0, 1, 1, 1, 0]


def test_pact_forward_and_gradients():
    x = torch.tensor([-0.5, 0.3, 1.2, 2.5], dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    q = pact_quantize(x, alpha, 2)
    # y = clip(x,0,2) = [0, .3, 1.2, 2]; y*3/2 = [0, .45, 1.8, 3] -> [0, 0, 2, 3] * 2/3
    assert q.tolist() == pytest.approx([0.0, 0.0, 4 / 3, 2.0])
    q.sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 0]
    assert alpha.grad.item() == 1.0         # one input at or above alpha


def test_dorefa_activation():
    q, g = _grad(lambda x: dorefa_act(x, 2), [-0.5, 0.2, 0.5, 1.4])
    assert q == pytest.approx([0, 1 / 3, 2 / 3, 1])   # round([0, .6, 1.5, 3]) = [0,1,2,3]
    assert g == [0, 1, 1, 0]
