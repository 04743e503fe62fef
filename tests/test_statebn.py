"""State BN's pass (methods/_statebn.py) and SLB's deployed weights: hand-computed statistics,
bit-for-bit equality with a plain reference implementation written here, and what the pass
does not do (no autograd, one deployed-weight computation per layer, no lasting state change).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_cfg
from harness.run import trainer as train
from methods.base import Progress, QLayer, decode, quant_layers
from methods.slb import Slb, SlbOptions, StateBN, argmax_rows

LOGITS = [[[0.3, -0.2], [1.0, 1.5]],
          [[-0.7, 0.1], [0.0, 0.0]]]     # W_q = [[-1, +1], [+1, -1]] (the tie takes index 0)


def _tiny_model(momentum: float = 0.1) -> tuple[Slb, nn.Module]:
    """conv1x1 (2 -> 2, SLB 1 bit, logits LOGITS) followed by a BatchNorm2d, as State BN."""
    method = Slb(SlbOptions(), 1)
    conv = nn.Conv2d(2, 2, 1, bias=False)
    wq = method.make_quantizer(conv, "0")
    with torch.no_grad():
        wq.logits.copy_(torch.tensor(LOGITS).reshape(4, 2).t())
    model = nn.Sequential(QLayer(conv, wq, nn.Identity()), nn.BatchNorm2d(2, momentum=momentum))
    method.prepare(model.train(), None)
    return method, model


def test_the_pass_updates_the_quantized_statistics_with_w_q_by_hand():
    method, model = _tiny_model()
    bn = model[1]
    assert isinstance(bn, StateBN)
    x = torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.0, 3.0]]).view(3, 2, 1, 1)
    # y = W_q x: y0 = -x0 + x1 = (-1, -1, 3), y1 = x0 - x1 = (1, 1, -3)
    mean = [1.0 / 3.0, -1.0 / 3.0]
    var = [sum((v - m) ** 2 for v in col) / 2 for col, m in zip(([-1, -1, 3], [1, 1, -3]), mean)]
    method.after_step(model, x, None, Progress(0, 1, 0, 1))
    torch.testing.assert_close(bn.running_mean_q, 0.1 * torch.tensor(mean))
    torch.testing.assert_close(bn.running_var_q, 0.9 + 0.1 * torch.tensor(var))
    assert bn.num_batches_tracked_q.item() == 1
    assert torch.equal(bn.running_mean, torch.zeros(2))      # the continuous set is untouched
    assert torch.equal(bn.running_var, torch.ones(2)) and bn.num_batches_tracked.item() == 0
    assert not bn.quantized and not model[0].deployed and model[0]._deployed_weight is None


def test_the_pass_runs_without_autograd_and_computes_w_q_once_per_layer(monkeypatch):
    method, model = _tiny_model()
    seen, calls = [], []
    model[1].register_forward_pre_hook(
        lambda m, args: seen.append((torch.is_inference_mode_enabled(), args[0].requires_grad,
                                     m.quantized)))
    wq = model[0].wq
    original = type(wq).deployed_weight
    monkeypatch.setattr(type(wq), "deployed_weight",
                        lambda self: calls.append(1) or original(self))
    x = torch.randn(4, 2, 3, 3)
    for step in range(3):
        method.after_step(model, x, None, Progress(0, 1, step, 3))
    assert seen == [(True, False, True)] * 3 and len(calls) == 3
    assert wq.logits.grad is None


@pytest.mark.parametrize("n", [2, 3, 4, 16, 33])
def test_argmax_rows_values_are_v_at_torch_argmax_including_ties(n):
    g = torch.Generator().manual_seed(n)
    a = torch.randint(0, 3, (n, 700), generator=g).float()   # many ties
    a[:, :3] = 1.0                                              # all tied: index 0
    v = torch.linspace(-1, 1, n)
    assert torch.equal(argmax_rows(a, v), v[a.argmax(0)])
    assert torch.equal(argmax_rows(a), a.argmax(0))


@pytest.mark.parametrize("n", [2, 4, 16])
def test_argmax_rows_gives_the_last_index_for_a_nan_logit(n):
    a = torch.zeros(n, 3)
    a[0, 0] = float("nan")
    a[n - 1, 1] = float("nan")
    assert argmax_rows(a).tolist() == [n - 1, n - 1, 0]


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_deployed_weight_is_the_decoded_export_bit_for_bit(bits, tmp_path):
    t = train.Trainer(tiny_cfg("slb", w_bits=bits), tmp_path)
    t.build()
    t.train_epoch(0)
    for _, layer in quant_layers(t.model):
        e = layer.wq.export()
        want = decode(e["codes"], e["levels"], e["scale"])
        got = layer.wq.deployed_weight()
        assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want)


# --------------------------------------------------------------------------- vs a reference

def reference_pass(model: nn.Module, x: torch.Tensor) -> None:
    """The State BN pass written plainly (the code before it was optimised): every QLayer's
    weight through export and decode, every StateBN's buffers swapped by hand, autograd off."""
    layers = [layer for _, layer in quant_layers(model)]
    bns = [m for m in model.modules() if isinstance(m, StateBN)]
    names = ("running_mean", "running_var", "num_batches_tracked")
    with torch.no_grad():
        for layer in layers:
            e = layer.wq.export()
            layer._deployed_weight, layer.deployed = decode(e["codes"], e["levels"],
                                                            e["scale"]), True
        for bn in bns:
            for name in names:
                bn._buffers[name], bn._buffers[name + "_q"] = (bn._buffers[name + "_q"],
                                                               bn._buffers[name])
        model(x)
        for bn in bns:
            for name in names:
                bn._buffers[name], bn._buffers[name + "_q"] = (bn._buffers[name + "_q"],
                                                               bn._buffers[name])
        for layer in layers:
            layer._deployed_weight, layer.deployed = None, False


@pytest.mark.parametrize("bits,every,flags", [
    (1, 1, {}), (2, 3, {}), (4, 1, {"channels_last": True}), (2, 1, {"a_bits": 2}),
    (1, 2, {"model.name": "resnet20", "model.width": 0.25, "a_bits": 1}),
])
def test_training_with_the_pass_equals_the_reference_bit_for_bit(bits, every, flags, tmp_path):
    """Two identical runs, one with the method's State BN pass, one with reference_pass: after
    a few steps every parameter, buffer and both statistic sets are equal bit for bit."""
    sets = ["method.bn=sbn", f"method.sbn_every={every}"]
    fast = train.Trainer(tiny_cfg("slb", sets=sets, w_bits=bits, **flags), tmp_path / "a")
    ref = train.Trainer(tiny_cfg("slb", sets=sets, w_bits=bits, **flags), tmp_path / "b")
    fast.build()
    ref.build()

    def ref_after_step(model, x, y, progress):
        if (progress.step + 1) % every == 0:
            reference_pass(model, x)
    ref.method.after_step = ref_after_step
    init = {k: v.clone() for k, v in fast.model.state_dict().items()}
    for t in (fast, ref):
        t.train_epoch(0)
    a, b = fast.model.state_dict(), ref.model.state_dict()
    assert a.keys() == b.keys()
    assert not [k for k in a if not torch.equal(a[k], b[k])]
    moved = [k for k in a if k.endswith("_q") and not torch.equal(a[k], init[k])]
    assert len(moved) >= 3 * 4, moved     # every quantized set was updated
    x = next(fast.data.test_batches(50))[0]
    outs = []
    for t in (fast, ref):
        with torch.no_grad(), t.method.deployed(t.model):
            outs.append(t.model.eval()(x))
    assert torch.equal(outs[0], outs[1])
