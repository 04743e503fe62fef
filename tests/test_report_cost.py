"""The report's cost section: the costs runs recorded, n/a (with why) where a record predates
them, ratios to fp, the method-memory table from the runs' own byte counts, units."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_report import write_run

from conftest import ROOT
from harness import files, records
from harness import report as report_pkg
from harness.costs import opcount
from harness.report import costs
from harness.run import resolve


def _record(run: Path, inference: dict | None, flops_per_step: float | None, hours: float,
            method_bytes: int | None = None) -> None:
    s = records.read_summary(run)
    s.inference_cost = inference or {}
    s.training_cost = {"flops_per_step": flops_per_step, "device_hours": hours} \
        if flops_per_step is not None else {}
    if method_bytes is not None:
        s.method_param_bytes = s.method_optimizer_state_bytes = method_bytes
    records.write_summary(run, s)


def _inference(method: str, w: int) -> dict:
    cfg = resolve.build(flags={"method": method, "w_bits": w, "model.name": "resnet20",
                         "data.name": "cifar10"})
    return {k: v for k, v in opcount.inference_cost(cfg, 10, 3, (32, 32)).items()
            if k != "layers"}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """fp and slb (W1/A32, W2/A32) on cifar10/resnet20, 2 seeds. fp and slb W1 recorded
    their inference and training costs (slb: 1.3x fp's training FLOPs per step); slb's W2
    records predate them. Method bytes as recorded: fp 1000, slb 2000 at W1, 4000 at W2."""
    root = tmp_path_factory.mktemp("cost") / "cost"
    for s in range(2):
        write_run(root, f"fp{s}", method="fp", w=32, acc=93.0 + s / 10, seed=s)
        for w in (1, 2):
            write_run(root, f"slb{w}_{s}", method="slb", w=w, acc=90.0 + s / 10, seed=s,
                      epoch_time=2.0)
    for s in range(2):
        _record(root / "runs" / f"slb1_{s}", _inference("slb", 1), 13.0, 0.5, 2000)
        _record(root / "runs" / f"fp{s}", _inference("fp", 32), 10.0, 0.25, 1000)
        _record(root / "runs" / f"slb2_{s}", None, None, 0.0, 4000)
    files.atomic_write_text(root / "study.toml", '[report]\nours = "slb"\n'
                              '[report.settings]\ncifar10 = "CIFAR-10"\n')
    return root


def _setting(st):
    (s,) = st.settings()
    return s


def test_cost_rows_read_what_the_runs_recorded(study):
    st = report_pkg.load_study(study)
    rows = {(r["row"], r["cell"][0]): r for r in costs.cost_rows(st, _setting(st))}
    fp, w1, w2 = rows[("fp", 32)], rows[("slb", 1)], rows[("slb", 2)]
    # ResNet-20 by hand (tests/test_opcount.py): 40,813,184 MACs, 443,008 of them fp
    assert fp["ops"] == 40_813_184 and fp["bops"] == 0
    assert w1["ops"] == (40_813_184 - 443_008) * 32 / 64 + 443_008
    assert w1["size"] < fp["size"]
    assert all(math.isnan(w2[k]) for k in ("size", "bops", "ops", "train_flops"))
    assert w1["train_flops"] == 13.0 and w1["fp"]["train_flops"] == 10.0
    assert w1["hours"] == 1.0 and fp["hours"] == 0.5        # summed over the 2 seeds
    assert w2["hours"] == pytest.approx(2 * 4 * 2.0 / 3600)  # wall time of old records


def test_cost_table_shows_sizes_ops_ratios_and_units(study):
    st = report_pkg.load_study(study)
    (table, memory) = costs.cost_tables(st, _setting(st))
    head = table.header
    row = {r[0] + r[1]: dict(zip(head, r)) for r in table.rows}
    # display names in rows and titles, the ids in the CSV
    w1, w2, fp = row["SLBW1/A32, 4 ep"], row["SLBW2/A32, 4 ep"], row["FP (32-bit)W32/A32, 4 ep"]
    assert table.caption == "Cost per method and cell, CIFAR-10 / resnet20"
    assert memory.caption.startswith("Memory of SLB's parameters") and memory.rows[0][0] == "SLB"
    assert w1["train FLOPs/step × fp"] == "×1.30" and w2["train FLOPs/step × fp"] == "n/a"
    assert fp["OPs"] == "40.8 M" and fp["BOPs"] == "0" and w1["BOPs"] == "1.29 G"
    assert [w2[k] for k in ("size MB", "BOPs", "OPs")] == ["n/a"] * 3
    assert w1["compute"] == "1.0 CPU-h" and fp["compute"] == "30 CPU-min"
    assert w1["× fp"] == "×2.00"  # epoch time: 2.0 s against fp's 1.0 s
    (note,) = [n for n in table.notes if n.startswith("n/a in ")]
    assert "size MB, BOPs, OPs (summary.json inference_cost)" in note
    assert "train FLOPs/step (summary.json training_cost.flops_per_step)" in note
    assert "peak MB" not in note and "not in these records (written before runs" in note
    data = table.data.set_index(["row", "w_bits"])
    assert data.loc[("slb", 1), "size_bytes"] == pytest.approx(50_840)
    # the method memory: the bytes the runs recorded, at the widths the study ran only
    mem = {r[1]: r for r in memory.rows}
    assert list(mem) == ["W1", "W2"]
    assert [mem[w][2:6] for w in ("W1", "W2")] == [["2.0 KiB", "×2.00", "2.0 KiB", "×2.00"],
                                                   ["3.9 KiB", "×4.00", "3.9 KiB", "×4.00"]]
    assert mem["W1"][6] == "500" and mem["W1"][7] == "×1.00"
    assert memory.header[6] == "peak MB (runs, A32)"
    assert not [n for n in memory.notes if n.startswith("n/a")]


def test_memory_table_says_n_a_for_records_without_bytes(study, tmp_path):
    root = tmp_path / "old"
    for s in range(2):
        for method, w in (("fp", 32), ("slb", 1)):
            run = write_run(root, f"{method}{s}", method=method, w=w, acc=90.0, seed=s)
            summ = records.read_summary(run)
            if method == "slb":
                summ.method_param_bytes = summ.method_optimizer_state_bytes = None
            records.write_summary(run, summ)
    st = report_pkg.load_study(root, ours="slb")
    (_, memory) = costs.cost_tables(st, _setting(st))
    assert memory.rows[0][2:6] == ["n/a"] * 4
    (note,) = [n for n in memory.notes if n.startswith("n/a")]
    assert "method_param_bytes or method_optimizer_state_bytes" in note


def test_cost_answer_names_deployed_size_and_ops(study):
    st = report_pkg.load_study(study)
    a = report_pkg.question("cost").ask(st)
    assert a["answered"]
    bullet = a["bullets"][0]
    assert bullet.startswith("CIFAR-10 / resnet20 on cpu: test (2 threads): SLB takes 2.00 s")
    assert a["text"].startswith("Cost of SLB from")
    assert "training FLOPs per step ×1.30 fp's" in bullet
    assert "W1/A32: 0.0508 MB, 20.6 M OPs (fp: 1.1 MB, 40.8 M OPs; ×21.6 smaller)" in bullet
    assert "used 1.5 CPU-h" in a["text"]  # 2 x 0.5 + 2 x 0.25 + 2 x 8 s


def test_units():
    assert [costs.sig2(x) for x in (0.0123, 1, 0.98, 123, 1234.5, 9.96)] == \
        ["0.012", "1.0", "0.98", "120", "1,200", "10"]
    assert costs.device_time(0.5, gpu=False) == "30 CPU-min"
    assert costs.device_time(2.345, gpu=False) == "2.3 CPU-h"
    assert costs.device_time(0.0123, gpu=True) == "0.012 GPU-h"
    assert costs.device_time(None, gpu=True) == "n/a"
    assert costs.si(40_813_184) == "40.8 M" and costs.si(1.2e9) == "1.2 G"


def test_example_study_cost_table_renders_from_its_old_records():
    example = ROOT / "results" / "examples" / "example_cifar10_jpeg"
    if not (example / "runs").is_dir():
        pytest.skip("no example study")
    st = report_pkg.load_study(example)
    tables = costs.cost_tables(st, _setting(st))
    assert tables and len(tables[0].rows) == len(costs.cost_rows(st, _setting(st)))
    inc = st.included
    for col, field in (("train FLOPs/step × fp", "training_cost"), ("size MB", "inference_cost")):
        recorded = [bool(s) for s in _summary_field(example, inc["run_id"], field)]
        if not any(recorded):  # recorded before it was measured: n/a, with the note
            j = tables[0].header.index(col)
            assert all(r[j] == "n/a" for r in tables[0].rows)
            assert any(field in n for n in tables[0].notes)


def _summary_field(study: Path, run_ids, field: str) -> list:
    return [files.read_json(study / "runs" / r / "summary.json").get(field) for r in run_ids]
