"""hashing: hand-computed quantization loss, forward/gradient, entropy term, logging, options."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import metrics_without_timing, tiny_cfg
from harness.run import rundir, trainer
from methods.base import UserError, decode, get
from methods.hashing import HashWeight, binary_entropy, quantization_loss

W = torch.tensor([[0.5, -0.25, 0.75, -0.5],     # mean|W| = 0.5
                  [0.0, -2.0, 1.0, 1.0]])       # mean|W| = 1.0; sign(0) = +1


def _quantizer(**opts):
    return HashWeight(W, 1, get("hashing").parse_options(opts))


def test_quantization_loss_value_and_gradients():
    w = torch.tensor([[0.5, -0.25], [-1.0, 0.0]], requires_grad=True)
    alpha = torch.tensor([0.25, 0.5], requires_grad=True)
    # w - alpha sign(w) = [[0.25, 0], [-0.5, -0.5]] -> 0.0625 + 0 + 0.25 + 0.25
    loss = quantization_loss(w, alpha)
    assert loss.item() == 0.5625
    loss.backward()
    assert w.grad.tolist() == [[0.5, 0.0], [-1.0, -1.0]]      # 2 (w - alpha sign w)
    assert alpha.grad.tolist() == [-0.5, 0.0]                 # -2 sum (w - alpha s) s


def test_forward_is_alpha_sign_with_clipped_ste():
    wq = _quantizer()
    y = wq()
    assert y.tolist() == [[0.5, -0.5, 0.5, -0.5], [1.0, -1.0, 1.0, 1.0]]
    c = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    (y * c).sum().backward()
    # alpha * c * 1[|w| <= 1]; -2.0 is outside
    assert wq.weight.grad.tolist() == [[0.5, 1.0, 1.5, 2.0], [5.0, 0.0, 7.0, 8.0]]


def test_identity_ste_option():
    wq = _quantizer(clip=False)
    wq().sum().backward()
    assert wq.weight.grad.tolist() == [[0.5] * 4, [1.0] * 4]


def test_learned_alpha_starts_at_mean_abs_and_gets_both_gradients():
    wq = _quantizer(alpha="learned")
    assert wq.alpha.tolist() == [0.5, 1.0]
    wq().sum().backward()
    assert wq.alpha.grad.tolist() == [0.0, 2.0]   # sum of sign(w) per channel
    wq.alpha.grad = None
    wq.alpha.data = torch.tensor([0.25, 1.0])
    wq.quantization_loss().backward()
    # -2 sum(|w| - alpha): channel 0: -2 (2.0 - 4 * 0.25) = -2; channel 1: -2 (4 - 4) = 0
    assert wq.alpha.grad.tolist() == [-2.0, 0.0]


def test_binary_entropy_in_nats():
    assert binary_entropy(torch.zeros(3), 0.05).item() == pytest.approx(3 * math.log(2))
    w = torch.tensor([0.1 * math.log(3)])  # sigmoid(ln 3) = 3/4
    want = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert binary_entropy(w, 0.1).item() == pytest.approx(want, rel=1e-6)
    # the entropy shrinks away from 0: minimising it pushes weights outwards
    w = torch.tensor([0.02], requires_grad=True)
    binary_entropy(w, 0.05).backward()
    assert w.grad.item() < 0


def test_method_loss_is_lambda_times_sum_plus_entropy(tmp_path):
    t = trainer.Trainer(tiny_cfg("hashing", sets=["method.lam=0.01", "method.entropy=0.001"]),
                      tmp_path)
    t.build()
    wqs = [m for m in t.model.modules() if isinstance(m, HashWeight)]
    q = sum(((m.weight - m.scale()[:, None, None, None] * torch.where(
        m.weight >= 0, 1.0, -1.0)) ** 2).sum() for m in wqs)
    z = [m.weight / 0.05 for m in wqs]
    h = sum((-(torch.sigmoid(x) * torch.log(torch.sigmoid(x))
               + torch.sigmoid(-x) * torch.log(torch.sigmoid(-x)))).sum() for x in z)
    got = t.method.loss(t.model)
    assert got.item() == pytest.approx((0.01 * q + 0.001 * h).item(), rel=1e-5)


def test_no_loss_terms_means_no_extra_loss(tmp_path):
    t = trainer.Trainer(tiny_cfg("hashing", sets=["method.lam=0"]), tmp_path)
    t.build()
    assert t.method.loss(t.model) is None


def test_quantization_loss_is_logged_per_epoch(tmp_path):
    rundir.run(tiny_cfg("hashing", epochs=1, sets=["method.entropy=0.001"]), tmp_path,
              echo=lambda s: None)
    df = metrics_without_timing(tmp_path)
    assert len(df) == 1
    assert (df["quant_loss"] > 0).all() and (df["entropy_loss"] > 0).all()


def test_export_scale_is_the_channel_alpha():
    e = _quantizer().export()
    assert e["codes"].tolist() == [[1, 0, 1, 0], [1, 0, 1, 1]]
    assert e["levels"].tolist() == [-1.0, 1.0] and e["scale"].tolist() == [0.5, 1.0]
    assert torch.equal(decode(e["codes"], e["levels"], e["scale"]), _quantizer()().detach())


def test_options_are_checked():
    for key, value in (("lam", "-1"), ("entropy", "-0.1"), ("entropy_temp", "0"),
                       ("alpha", "max"), ("lambda", "0.1")):
        with pytest.raises(UserError, match=f"method.{key}"):
            tiny_cfg("hashing", sets=[f"method.{key}={value}"])
    with pytest.raises(UserError, match="w_bits"):
        tiny_cfg("hashing", w_bits=2)
