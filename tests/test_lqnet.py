"""LQ-Nets: hand-computed levels, bins, STE gradient, QEM step, basis init, options."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_cfg
from harness.run import trainer
from methods.base import UserError, decode, quant_layers
from methods.lqnet import (
    LqAct,
    LqWeight,
    act_basis_init,
    code_table,
    lq_act_quantize,
    lq_levels,
    lq_qem,
    lq_quantize,
    weight_basis_init,
)

DELTA = 1e-4
# two output channels, K = 2; column c is channel c's basis (v_1, v_2)
BASIS = torch.tensor([[0.25, 0.5], [0.5, 0.125]])
# channel 0: levels v^T e for e in {-1,1}^2 = -0.75, -0.25, 0.25, 0.75; thresholds -0.5, 0, 0.5
# channel 1: -0.625, 0.375, -0.375, 0.625 -> sorted -0.625, -0.375, 0.375, 0.625; same thresholds
ROW = [-1.0, -0.5, -0.375, 0.0, 0.125, 0.5, 0.625, 2.0]   # -0.5, 0, 0.5 sit on thresholds
W = torch.tensor([ROW, ROW])
IDX = [0, 0, 1, 1, 2, 2, 3, 3]                           # on a threshold: the lower level
Y0 = [-0.75, -0.75, -0.25, -0.25, 0.25, 0.25, 0.75, 0.75]
Y1 = [-0.625, -0.625, -0.375, -0.375, 0.375, 0.375, 0.625, 0.625]


def test_code_table_bit_j_of_l():
    assert code_table(2).tolist() == [[-1, -1], [1, -1], [-1, 1], [1, 1]]
    assert code_table(2, signed=False).tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]


def test_levels_sorted_per_channel_with_their_codes():
    levels, bits = lq_levels(BASIS)
    assert levels.tolist() == [[-0.75, -0.25, 0.25, 0.75], [-0.625, -0.375, 0.375, 0.625]]
    assert bits[0].tolist() == [[-1, -1], [1, -1], [-1, 1], [1, 1]]
    assert bits[1].tolist() == [[-1, -1], [-1, 1], [1, -1], [1, 1]]


def test_forward_midpoint_bins_and_identity_gradient():
    w = W.clone().requires_grad_(True)
    y, codes = lq_quantize(w, BASIS)
    assert y.tolist() == [Y0, Y1]
    assert codes.tolist() == [IDX, IDX]
    c = torch.arange(16.0).reshape(2, 8)
    (y * c).sum().backward()
    assert torch.equal(w.grad, c)  # identity STE, even outside the level range (2.0)


def test_conv_shaped_weight_and_one_bit():
    w = W.reshape(2, 2, 2, 2)
    y, _ = lq_quantize(w, BASIS)
    assert y.reshape(2, 8).tolist() == [Y0, Y1]
    y1, codes1 = lq_quantize(torch.tensor([[-0.5, 0.0, 0.25]]), torch.tensor([[0.5]]))
    assert y1.tolist() == [[-0.5, -0.5, 0.5]] and codes1.tolist() == [[0, 0, 1]]  # 0 -> -v


def test_qem_two_bit_by_hand():
    # channel 0 codes B (rows) for IDX: (-1,-1)x2, (1,-1)x2, (-1,1)x2, (1,1)x2
    # B^T B = [[8, 0], [0, 8]]; B^T x = (3.125, 5.125)
    want0 = [(3.125 + DELTA * 0.25) / (8 + DELTA), (5.125 + DELTA * 0.5) / (8 + DELTA)]
    # channel 1 codes for IDX: (-1,-1)x2, (-1,1)x2, (1,-1)x2, (1,1)x2 -> B^T x = (5.125, 3.125)
    want1 = [(5.125 + DELTA * 0.5) / (8 + DELTA), (3.125 + DELTA * 0.125) / (8 + DELTA)]
    v = lq_qem(W, torch.tensor([IDX, IDX]), BASIS, DELTA)
    assert torch.allclose(v.t(), torch.tensor([want0, want1]), atol=1e-7, rtol=0)


def test_qem_one_bit_and_the_moving_average_in_a_training_step():
    wq = LqWeight(torch.tensor([[0.5, -1.0, 0.25, -0.25]]), 1, DELTA)
    wq.basis.fill_(0.5)
    wq.train()
    wq().sum().backward()
    # codes +1,-1,+1,-1: B^T B = 4, B^T x = 2.0 -> v* = (2 + delta 0.5) / (4 + delta)
    v_star = (2.0 + DELTA * 0.5) / (4 + DELTA)
    assert wq.basis.item() == 0.5  # the forward only computes v*; after_step applies it
    wq.update_basis(0.9)
    assert wq.basis.item() == pytest.approx(0.9 * 0.5 + 0.1 * v_star, abs=1e-7)
    wq.update_basis(0.9)  # nothing pending: no second update
    assert wq.basis.item() == pytest.approx(0.9 * 0.5 + 0.1 * v_star, abs=1e-7)
    wq.eval()
    with torch.no_grad():
        wq()
    assert wq.pending is None  # evaluation forwards never update the basis


def test_paper_basis_init():
    # n = 3*3*8 = 72, sqrt(2/72) = 1/6: v_j = 0.6745/6 * 2^j / 2
    v = weight_basis_init((8, 4, 3, 3), 2)
    assert v.shape == (2, 8)
    assert torch.allclose(v[:, 0], torch.tensor([0.6745 / 12, 0.6745 / 6]))
    lin = weight_basis_init((50, 7), 1)  # linear: n = C_out = 50, sqrt(2/50) = 0.2
    assert torch.allclose(lin, torch.full((1, 50), 0.6745 * 0.2))
    assert torch.allclose(act_basis_init(2), torch.tensor([0.6745 * 2 / 3, 0.6745 * 4 / 3]))


def test_activation_quantizer_levels_and_gradient():
    # basis (0.5, 1.0), codes {0,1}^2: levels 0, 0.5, 1.0, 1.5; thresholds 0.25, 0.75, 1.25
    x = torch.tensor([-1.0, 0.0, 0.25, 0.5, 1.25, 1.5, 3.0], requires_grad=True)
    y, codes = lq_act_quantize(x, torch.tensor([0.5, 1.0]))
    assert y.tolist() == [0.0, 0.0, 0.0, 0.5, 1.0, 1.5, 1.5]
    assert codes.tolist() == [0, 0, 0, 1, 2, 3, 3]
    y.sum().backward()
    assert x.grad.tolist() == [1, 1, 1, 1, 1, 1, 0]  # d min(x, 1.5)/dx


def test_activation_qem_step():
    act = LqAct(1, DELTA)
    act.basis.fill_(1.0)  # levels 0, 1; threshold 0.5
    act.train()
    act(torch.tensor([0.0, 0.25, 0.75, 2.0]))
    # codes 0,0,1,1: B^T B = 2, B^T x = 2.75 -> v* = (2.75 + delta) / (2 + delta)
    act.update_basis(0.9)
    want = 0.9 + 0.1 * (2.75 + DELTA) / (2 + DELTA)
    assert act.basis.item() == pytest.approx(want, abs=1e-7)


def test_export_is_per_channel_levels_and_decodes_to_the_forward():
    wq = LqWeight(W, 2, DELTA)
    wq.basis.copy_(BASIS)
    e = wq.export()
    assert e["codes"].dtype == torch.uint8 and e["codes"].tolist() == [IDX, IDX]
    assert e["levels"].shape == (2, 4) and e["scale"].item() == 1.0
    assert torch.equal(decode(e["codes"], e["levels"], e["scale"]), wq().detach())


def test_options_are_checked():
    with pytest.raises(UserError, match="method.ema"):
        tiny_cfg("lqnet", sets=["method.ema=1.0"])
    with pytest.raises(UserError, match="method.delta"):
        tiny_cfg("lqnet", sets=["method.delta=-1"])
    with pytest.raises(UserError, match="method.act_quant"):
        tiny_cfg("lqnet", sets=["method.act_quant=pact"])
    with pytest.raises(UserError, match="method.basis"):
        tiny_cfg("lqnet", sets=["method.basis=1"])
    with pytest.raises(UserError, match="w_bits"):
        tiny_cfg("lqnet", w_bits=5)


def test_lqnet_activations_need_a_bits_below_32():
    # refused when the config is resolved, before any run directory or job exists
    with pytest.raises(UserError, match="method.act_quant"):
        tiny_cfg("lqnet", w_bits=2, sets=["method.act_quant=lqnet"])


def test_lqnet_activation_option_trains_its_basis(tmp_path):
    t = trainer.Trainer(tiny_cfg("lqnet", w_bits=2, a_bits=2,
                               sets=["method.act_quant=lqnet"]), tmp_path)
    t.build()
    acts = [layer.act for _, layer in quant_layers(t.model)]
    assert acts and all(isinstance(a, LqAct) and a.bits == 2 for a in acts)
    before = [a.basis.clone() for a in acts]
    stats = t.train_epoch(0)  # raises Diverged on a non-finite loss
    assert math.isfinite(stats["train_loss"])
    assert all(not torch.equal(a.basis, b) for a, b in zip(acts, before))
    assert all(math.isfinite(v) for a in acts for v in a.basis.tolist())
