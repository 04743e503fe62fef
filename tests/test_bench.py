"""The benchmark runs end to end on a tiny model (its targets are checked by `make bench`,
never by a timed test)."""
from __future__ import annotations

import re

import pandas as pd

from harness.cli import main
from methods.base import load_all


def test_bench_times_every_variant_and_writes_tables(tmp_path, capsys):
    rc = main(["bench", "--model", "small_cnn", "--width", "0.125", "--batch-size", "16",
               "--bits", "1", "2", "--rounds", "1", "--steps", "1", "--warmup", "0",
               "--memory", "held",
               "--out", str(tmp_path)])
    assert rc == 0
    df = pd.read_csv(tmp_path / "bench.csv")
    assert {"bare", "fp"} <= set(df.variant)
    for name, cls in load_all().items():
        for bits in sorted(cls.bits & {1, 2}):
            for label in cls.bench_variants:
                tag = f"{name}[{label}]" if label else name
                assert f"{tag}-w{bits}" in set(df.variant)
    assert (df.median_step_s > 0).all() and (df.peak_train_mb > 0).all()
    slb4 = df[df.variant == "slb[bn=none]-w2"].iloc[0]
    assert slb4.method_param_mb == 4 * df[df.variant == "ste-w1"].iloc[0].method_param_mb
    assert "## Targets" in (tmp_path / "bench.md").read_text()
    out = capsys.readouterr().out   # the targets were set for resnet20: no verdict on small_cnn
    assert "small_cnn: ratios only, no PASS/MISS" in out
    assert not re.search(r"^(PASS|MISS) ", out, re.M), out
