"""summary.json ``seed_fingerprint``: what a run's seed controlled (harness.run.seeding), so
that the report pairs runs that share it. Runs of one seed share the data order whatever
their method; the starting network is the same for variants of one method (same parameters)
and differs from another method's; another seed changes both."""
from __future__ import annotations

import torch

from conftest import tiny_cfg
from harness import records
from harness.run import rundir, seeding, trainer


def _fingerprint(tmp_path, method: str, seed: int = 0, **flags) -> dict[str, str]:
    t = trainer.Trainer(tiny_cfg(method, seed=seed, **flags), tmp_path / f"{method}{seed}")
    t.build()
    return t.seed_fingerprint


def test_fingerprint_says_what_a_seed_shares(tmp_path):
    slb = _fingerprint(tmp_path, "slb")
    assert set(slb) == {"data_order", "init"} and all(len(v) == 16 for v in slb.values())
    assert _fingerprint(tmp_path, "slb", sets=None) == slb                 # deterministic
    other_bn = trainer.Trainer(tiny_cfg("slb", sets=["method.bn=none"]), tmp_path / "b")
    other_bn.build()
    assert other_bn.seed_fingerprint == slb            # a variant: same data, same network
    ste = _fingerprint(tmp_path, "ste")
    assert ste["data_order"] == slb["data_order"] and ste["init"] != slb["init"]
    seed1 = _fingerprint(tmp_path, "slb", seed=1)
    assert seed1["data_order"] != slb["data_order"] and seed1["init"] != slb["init"]


def test_fingerprint_hashes_the_state_before_training():
    model = torch.nn.Linear(3, 2)
    gen = torch.Generator().manual_seed(5)
    before = seeding.seed_fingerprint(model, gen)
    torch.randperm(10, generator=gen)                  # one epoch's order drawn
    after = seeding.seed_fingerprint(model, gen)
    assert after["data_order"] != before["data_order"] and after["init"] == before["init"]
    with torch.no_grad():
        model.weight[0, 0] += 1.0
    assert seeding.seed_fingerprint(model, torch.Generator().manual_seed(5)) == {
        "data_order": before["data_order"], "init": seeding.seed_fingerprint(model, gen)["init"]}
    assert seeding.seed_fingerprint(model, gen)["init"] != before["init"]


def test_a_run_records_its_fingerprint(tmp_path):
    s = rundir.run(tiny_cfg("ste"), tmp_path, echo=lambda m: None)
    recorded = records.read_summary(tmp_path).seed_fingerprint
    assert recorded == s.seed_fingerprint == _fingerprint(tmp_path, "ste")
