"""Model variants for the paper's recipes: ResNet-20 blocks and shortcuts, Bi-Real ResNet-18.

Parameter counts are written out by hand from the architectures (conv k*k*cin*cout, BN 2c,
per-channel PReLU c, FC cin*classes + classes); shapes come from small forward passes.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import ROOT, tiny_cfg
from harness.deploy.export import export_and_check
from harness.run import resolve, rundir
from harness.tasks import models
from harness.tasks.classify import models as classify_models
from methods.base import QLayer, UserError
from methods.base import get as get_method

RESNET20 = classify_models.MODELS["resnet20"]
BIREAL = classify_models.MODELS["bireal_resnet18"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(k, cin, cout):
    return k * k * cin * cout


def resnet20_params(shortcut: str, prelu: bool) -> int:
    """He et al.'s ResNet-20, widths 16-32-64, 10 classes, by hand."""
    total = conv(3, 3, 16) + 2 * 16                                      # stem conv + BN
    cin = 16
    for cout in (16, 32, 64):
        for i in range(3):
            total += conv(3, cin, cout) + conv(3, cout, cout) + 2 * (2 * cout)
            total += 2 * cout if prelu else 0                            # two PReLUs
            if cin != cout and shortcut == "B":
                total += conv(1, cin, cout) + 2 * cout                   # 1x1 projection + BN
            cin = cout
    return total + 64 * 10 + 10


def test_resnet20_option_a_is_the_papers_0_27_m():
    assert resnet20_params("A", False) == 269_722                       # "0.27M" (He et al.)
    model = RESNET20(10, 3, (32, 32), 1.0, nn.ReLU, block="standard", shortcut="A")
    assert n_params(model) == 269_722
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules())


@pytest.mark.parametrize("block", classify_models.BLOCKS)
@pytest.mark.parametrize("shortcut", classify_models.SHORTCUTS)
def test_resnet20_blocks_and_shortcuts_shapes_and_counts(block, shortcut):
    model = RESNET20(10, 3, (32, 32), 1.0, nn.ReLU, block=block, shortcut=shortcut)
    assert n_params(model) == resnet20_params(shortcut, block == "convprelubn")
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    assert len(prelus) == (18 if block == "convprelubn" else 0)


def test_convprelubn_is_conv_prelu_bn_and_adds_the_shortcut_last():
    torch.manual_seed(0)
    blk = classify_models.BasicBlock(4, 8, 2, nn.ReLU, block="convprelubn", shortcut="A").eval()
    x = torch.randn(2, 4, 8, 8)
    out = blk.bn1(blk.act1(blk.conv1(x)))
    out = blk.bn2(blk.act2(blk.conv2(out)))
    pad = torch.zeros(2, 2, 4, 4)
    shortcut = torch.cat([pad, x[:, :, ::2, ::2], pad], dim=1)          # option A: 2 + 4 + 2
    torch.testing.assert_close(blk(x), out + shortcut, rtol=0, atol=0)
    assert (blk(x) < 0).any()                                            # no ReLU after the sum


def test_default_resnet20_is_the_old_one():
    old = classify_models.MODELS["resnet20"](10, 3, (32, 32), 1.0, nn.ReLU)
    assert n_params(old) == resnet20_params("B", False)
    assert [n for n, _ in old.named_parameters()][:6] == [
        "conv1.weight", "bn1.weight", "bn1.bias", "layers.0.conv1.weight",
        "layers.0.bn1.weight", "layers.0.bn1.bias"]


def bireal_params(width_channels=(64, 128, 256, 512), classes=1000, prelu=False) -> int:
    """Bi-Real Net ResNet-18 by hand: stem, 16 units (3x3 conv + BN [+ PReLU]), the three
    AvgPool-conv1x1-BN downsamples, FC."""
    c0 = width_channels[0]
    total = conv(7, 3, c0) + 2 * c0
    cin = c0
    for cout in width_channels:
        for _ in range(4):
            total += conv(3, cin, cout) + 2 * cout + (cout if prelu else 0)
            if cin != cout:
                total += conv(1, cin, cout) + 2 * cout
            cin = cout
    return total + cin * classes + classes


@pytest.mark.parametrize("block", classify_models.BLOCKS)
def test_bireal_resnet18_counts_and_small_forward(block):
    prelu = block == "convprelubn"
    full = classify_models.MODELS["bireal_resnet18"](1000, 3, (224, 224), 1.0, nn.ReLU, block=block)
    assert n_params(full) == bireal_params(prelu=prelu)
    assert bireal_params() == 11_689_512          # as torchvision's ResNet-18: same weights
    small = BIREAL(10, 3, (32, 32), 0.25, nn.Hardtanh, block=block)
    assert n_params(small) == bireal_params((16, 32, 64, 128), 10, prelu)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    convs3 = [m for m in small.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    units = [m for m in small.modules() if isinstance(m, classify_models.BiRealUnit)]
    assert len(convs3) == len(units) == 16                # a shortcut around every 3x3 conv


def test_bireal_unit_adds_a_real_valued_shortcut_around_its_conv():
    torch.manual_seed(0)
    unit = classify_models.BiRealUnit(4, 8, 2, nn.Hardtanh, "standard").eval()
    x = torch.randn(2, 4, 8, 8)
    down = unit.shortcut[2](unit.shortcut[1](nn.functional.avg_pool2d(x, 2)))
    want = unit.bn(unit.conv(nn.functional.hardtanh(x))) + down
    torch.testing.assert_close(unit(x), want, rtol=0, atol=0)


def test_bireal_trains_with_slb_weights_and_the_policy():
    cfg = tiny_cfg("slb", sets=["model.name=bireal_resnet18", "model.block=convprelubn",
                                "model.quantize_shortcut=false"], a_bits=1)
    method_cls = get_method("slb")
    method = method_cls(method_cls.parse_options({}), 1)
    model = models.build(cfg, classify_models.MODELS, 10, 3, (32, 32), method)
    q = [n for n, m in model.named_modules() if isinstance(m, QLayer)]
    assert len(q) == 16 and all(".conv" in n for n in q)   # first conv, FC, 1x1s stay fp
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert all(m.wq.logits.grad is not None for m in model.modules() if isinstance(m, QLayer))


@pytest.mark.parametrize("model,sets", [
    ("resnet20", ["model.block=convprelubn", "model.shortcut=A"]),
    ("bireal_resnet18", ["model.block=convprelubn", "model.quantize_shortcut=false"])])
def test_new_models_train_export_and_rebuild_exactly(model, sets, tmp_path):
    cfg = tiny_cfg("slb", sets=[f"model.name={model}", "method.bn=recal_epoch",
                                "method.recal_from=first", "method.recal_batches=2", *sets],
                   epochs=1, a_bits=4)
    assert rundir.run(cfg, tmp_path, echo=lambda s: None).status == "completed"
    acc, want = export_and_check(tmp_path, echo=lambda s: None)
    assert acc == want


@pytest.mark.parametrize("sets,field,part", [
    (["model.block=resnext"], "model.block", "is not one of ['standard', 'convprelubn']"),
    (["model.shortcut=C"], "model.shortcut", "is not one of ['A', 'B']"),
    (["model.name=vgg_small", "model.block=convprelubn"], "model.block",
     "vgg_small has no block option"),
    (["model.name=bireal_resnet18", "model.shortcut=A"], "model.shortcut",
     "bireal_resnet18 has no shortcut option"),
])
def test_bad_model_options_are_user_errors(sets, field, part):
    with pytest.raises(UserError) as e:
        resolve.build(flags={"method": "fp"}, sets=sets)
    assert e.value.field == field and part in str(e.value)


def test_committed_run_ids_survive_the_new_keys():
    """Every committed example record's id is the hash today's code computes, except the
    runs whose computation changed: bn=recal_epoch records written before ``recal_from``
    existed (it now calibrates from the window start). Their old meaning, asked for
    explicitly, is their old id again."""
    runs = sorted((ROOT / "results" / "examples").glob("*/runs/*/config.json"))
    assert len(runs) >= 100
    old_recal = []
    for path in runs:
        d = json.loads(Path(path).read_text())
        cfg = resolve.from_dict((d))
        assert cfg.model.block == "standard" and cfg.model.shortcut == "B"
        assert path.parent.name.endswith("_" + d["config_hash"][:8])     # the run id
        same = resolve.config_hash(cfg) == d["config_hash"]
        changed = d["method"].get("bn") == "recal_epoch" and "recal_from" not in d["method"]
        assert same == (not changed), path.parent.name
        old_recal += [d] if changed else []
    for d in old_recal[:1]:
        d["method"]["recal_from"] = "first"
        assert resolve.config_hash(resolve.from_dict((d))) == d["config_hash"]
    # non-default model keys do enter the hash
    base = tiny_cfg("fp", sets=["model.name=resnet20"])
    other = tiny_cfg("fp", sets=["model.name=resnet20", "model.shortcut=A"])
    assert resolve.config_hash(base) != resolve.config_hash(other)
