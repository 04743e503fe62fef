"""Reproducing the paper: per-cell settings in a study, `sweep --dry-run --json`, the shipped
reproduction studies and the report's gap-to-paper table on planted records."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_report import write_run

from conftest import ROOT
from harness import config, files
from harness import report as report_pkg
from harness.cli import main
from harness.study import sweep
from harness.study.spec import parse_cell_pattern

SPEC = """
[study]
name = "__NAME__"
reproduction = true
[recipe]
model = { name = "small_cnn", width = 0.25 }
data = { name = "digits", subset_train = 100, subset_test = 50 }
optim = { lr = 0.05 }
batch_size = 50
[cell_recipe]
"W1/A1..A8" = { optim = { lr = 0.02 } }
[grid]
bits = [[1, 1], [1, 4], [1, 32], [2, 2], [2, 32]]
epochs = [1]
seeds = [0]
[variants.slb]
method = "slb"
options = { start = 0.4, end = 0.9, bn = "recal_epoch" }
[variants.slb.cell_options]
"W1/A1..A8" = { factor = 1.03 }
"W1/A32" = { factor = 1.04 }
"W2/A2..A8" = { factor = 1.04 }
"W2/A32" = { factor = 1.05 }
"""


def write_spec(tmp_path: Path, text: str = SPEC, name: str = "repro") -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(text.replace("__NAME__", name))
    return p


def by_cell(study) -> dict[str, object]:
    return {f"W{r.w_bits}/A{r.a_bits}": r.cfg for r in study.runs}


# --------------------------------------------------------------------------- per-cell settings

def test_cell_patterns_parse_exact_cells_and_ranges():
    assert parse_cell_pattern("W1/A32") == ((1, 1), (32, 32))
    assert parse_cell_pattern("W1/A1..A8") == ((1, 1), (1, 8))
    assert parse_cell_pattern("W1/A1..8") == ((1, 1), (1, 8))
    assert parse_cell_pattern("W1..W4/A32") == ((1, 4), (32, 32))
    for bad in ("W1A32", "w1/a32", "W1/A8..A1", "W1/A", "1/32", "W*/A32", "W1/A32, W2/A32"):
        assert parse_cell_pattern(bad) is None, bad


def test_per_cell_options_and_recipe_resolve_into_each_run(tmp_path):
    cfgs = by_cell(sweep.load_spec(write_spec(tmp_path)))
    factor = {c: cfg.method_options.factor for c, cfg in cfgs.items()}
    assert factor == {"W1/A1": 1.03, "W1/A4": 1.03, "W1/A32": 1.04, "W2/A2": 1.04,
                      "W2/A32": 1.05}
    lr = {c: cfg.optim.lr for c, cfg in cfgs.items()}
    assert lr == {"W1/A1": 0.02, "W1/A4": 0.02, "W1/A32": 0.05, "W2/A2": 0.05, "W2/A32": 0.05}
    assert all(cfg.method_options.bn == "recal_epoch" for cfg in cfgs.values())
    # --set overrides the shared recipe in every cell, per-cell keys included
    cfgs = by_cell(sweep.load_spec(write_spec(tmp_path), sets=["optim.lr=0.07"]))
    assert {cfg.optim.lr for cfg in cfgs.values()} == {0.07}


@pytest.mark.parametrize("edit,needle", [
    (('"W1/A32" = { factor = 1.04 }', '"W1A32" = { factor = 1.04 }'),
     'variants.slb.cell_options."W1A32": not a cell; write "W1/A32"'),
    (('"W2/A32" = { factor = 1.05 }', '"W2/A32" = { factor = 1.05 }\n"W4/A4..A8" = { factor = 1 }'),
     'variants.slb.cell_options."W4/A4..A8": names no cell of this grid (W1/A1, W1/A4, W1/A32'),
    (('"W2/A32" = { factor = 1.05 }', '"W1..W2/A32" = { factor = 1.05 }'),
     'variants.slb.cell_options: "W1/A32" and "W1..W2/A32" both set factor in W1/A32 '
     '(1.04 vs 1.05)'),
    (('"W2/A32" = { factor = 1.05 }\n', ''),
     'variants.slb.cell_options: factor is set for some cells but not for W2/A32'),
    (('"W1/A32" = { factor = 1.04 }', '"W1/A32" = { factr = 1.04 }'),
     'variants.slb.cell_options."W1/A32": method.factr: unknown option'),
    (('"W1/A32" = { factor = 1.04 }', '"W1/A32" = { factor = 0.5 }'),
     'variants.slb.cell_options."W1/A32": method.factor: must be >= 1'),
    (('"W1/A32" = { factor = 1.04 }', '"W1/A32" = 1.04'),
     'variants.slb.cell_options."W1/A32": expected a table of values, got 1.04'),
    (('reproduction = true\n', ''),
     'cell_recipe: per-cell recipe keys are for reproduction studies (set study.reproduction'),
    (('{ optim = { lr = 0.02 } }', '{ optim = { lr = 0.02 }, epochs = 3 }'),
     'cell_recipe."W1/A1..A8": epochs: set by the grid or a variant'),
    (('{ optim = { lr = 0.02 } }', '{ optim = { lrr = 0.02 } }'),
     """cell_recipe."W1/A1..A8": optim.lrr: unknown config key; did you mean 'optim.lr'?"""),
    (('"W1/A1..A8" = { optim', '"W3/A1..A8" = { optim'),
     'cell_recipe."W3/A1..A8": names no cell of this grid'),
])
def test_per_cell_mistakes_are_one_line_spec_errors(tmp_path, edit, needle):
    text = SPEC.replace(*edit)
    assert text != SPEC
    with pytest.raises(sweep.SpecErrors) as e:
        sweep.load_spec(write_spec(tmp_path, text))
    assert any(needle in line for line in e.value.errors), e.value.errors
    assert all("\n" not in line for line in e.value.errors)


def test_every_per_cell_mistake_is_reported_at_once_and_nothing_is_submitted(tmp_path, capsys):
    text = SPEC.replace('"W1/A32" = { factor', '"W1/A33" = { factor').replace(
        '"W2/A32" = { factor = 1.05 }', '"W2/A32" = { factr = 1.05 }').replace(
        "lr = 0.02 }", "lr = 0.02 }, seed = 1")
    rc = main(["sweep", str(write_spec(tmp_path, text)), "--executor", "debug",
               "--results", str(tmp_path / "res")])
    err = capsys.readouterr().err
    assert rc == 2 and not (tmp_path / "res").exists()
    for needle in ('"W1/A33": names no cell', "method.factr: unknown option",
                   'cell_recipe."W1/A1..A8": seed: set by the grid', "nothing was submitted"):
        assert needle in err, needle


# --------------------------------------------------------------------------- sweep --dry-run --json

def test_dry_run_json_is_one_object_per_run_and_what_run_records(tmp_path, capsys):
    spec, res = write_spec(tmp_path), tmp_path / "res"
    args = ["sweep", str(spec), "--executor", "debug", "--results", str(res)]
    assert main(args + ["--dry-run", "--json"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]   # every stdout line is JSON
    assert len(lines) == 5 and not res.exists()
    assert "study repro (scale full): 5 runs" in err           # the plan goes to stderr
    one = next(x for x in lines if x["cell"] == "W1/A32")
    assert {k: one[k] for k in ("variant", "method", "w_bits", "a_bits", "epochs", "seed",
                                "to_submit")} == {
        "variant": "slb", "method": "slb", "w_bits": 1, "a_bits": 32, "epochs": 1, "seed": 0,
        "to_submit": True}
    assert one["config"]["method"]["factor"] == 1.04 and one["config"]["optim"]["lr"] == 0.05
    assert one["run_id"].endswith(one["config"]["config_hash"][:8])
    assert main(args) == 0                                     # now run them
    capsys.readouterr()
    for x in lines:                                            # config.json is the JSON config
        assert json.loads((res / "repro" / "runs" / x["run_id"] / "config.json")
                          .read_text()) == x["config"]
    assert main(args + ["--dry-run", "--json"]) == 0
    again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["run_id"] for x in again] == [x["run_id"] for x in lines]
    assert not any(x["to_submit"] for x in again)


def test_dry_run_json_in_a_fresh_process_prints_only_json(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "sweep", str(write_spec(tmp_path)), "--dry-run",
         "--json", "--results", str(tmp_path / "res")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,   # no sbatch needed to plan
        env={**os.environ, "PYTHONPATH": str(ROOT), "PATH": os.path.dirname(sys.executable)})
    assert proc.returncode == 0, proc.stderr
    assert len([json.loads(line) for line in proc.stdout.splitlines()]) == 5


def test_a_dry_run_plans_before_the_data_exists(tmp_path, capsys):
    """A missing data root is a warning for --dry-run (the plan and the JSON still print,
    stdout stays JSON) and an error for a real sweep; both name the fixes `sweep` has."""
    spec = write_spec(tmp_path, SPEC.replace('data = { name = "digits", subset_train = 100, '
                                             'subset_test = 50 }',
                                             'data = { name = "imagefolder", root = "imgs" }'))
    res = tmp_path / "res"
    why = (f"{spec}: recipe.data.root: {str(tmp_path / 'imgs')!r} is not a directory; set "
           "data.root (in a study: [recipe] data.root, relative to the spec's folder, or sweep "
           "--set data.root=DIR)")
    assert main(["sweep", str(spec), "--dry-run", "--json", "--results", str(res)]) == 0
    out, err = capsys.readouterr()
    assert len([json.loads(line) for line in out.splitlines()]) == 5
    assert err.splitlines()[0] == f"warning: {why}; planned anyway (dry run)"
    assert "study repro (scale full): 5 runs" in err and "--data-root" not in err
    assert main(["sweep", str(spec), "--dry-run", "--results", str(res)]) == 0
    out, err = capsys.readouterr()
    assert "to submit: 5 runs" in out and err.startswith("warning: ")
    assert main(["sweep", str(spec), "--executor", "debug", "--results", str(res)]) == 2
    assert capsys.readouterr().err.splitlines()[0] == f"error: {why}"
    assert not res.exists()


def test_json_without_dry_run_is_a_user_error(tmp_path, capsys):
    rc = main(["sweep", str(write_spec(tmp_path)), "--json", "--results", str(tmp_path / "r")])
    assert rc == 2
    assert capsys.readouterr().err.strip() == ("error: --json: prints the runs a dry run "
                                                "would submit; add --dry-run")


# --------------------------------------------------------------------------- shipped studies

README_FACTOR = {"W1/A1": 1.03, "W1/A2": 1.03, "W1/A4": 1.03, "W1/A8": 1.03, "W1/A32": 1.04,
                 "W2/A2": 1.04, "W2/A4": 1.04, "W2/A8": 1.04, "W2/A32": 1.05,
                 "W4/A4": 1.05, "W4/A8": 1.05, "W4/A32": 1.06}


def header(path: Path) -> str:
    lines = path.read_text().splitlines()
    return "\n".join(line for line in lines[:next(i for i, x in enumerate(lines)
                                                    if not x.startswith("#"))])


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_study_states_its_cost_and_paper_grids_their_deviations(path):
    text = header(path)
    assert re.search(r"GPU-hours", text) and "Deviations from the README" in text, path.name
    if path.stem.startswith(("slb_reproduce", "cifar10_")):
        assert "GPU-hour estimate" in text
    assert "shared/reference" not in path.read_text()        # reported numbers ship in the repo


@pytest.fixture
def fake_cifar(tmp_path) -> Path:
    d = tmp_path / "cifar" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    (d / "data_batch_1").write_bytes(b"")
    return d.parent


@pytest.mark.parametrize("name,model,lr,wd,start,a_quant", [
    ("resnet20", "resnet20", 0.1, 1e-4, 0.4, "pact"),
    ("vgg_small", "vgg_small", 0.02, 5e-4, 0.3, "dorefa")])
def test_reproduction_studies_run_the_readme_recipe_per_cell(fake_cifar, name, model, lr, wd,
                                                             start, a_quant):
    study = sweep.load_spec(ROOT / "studies" / f"slb_reproduce_{name}.toml",
                            sets=[f"data.root={fake_cifar}"])
    assert len(study.runs) == 60 and {r.seed for r in study.runs} == {0, 1, 2, 3, 4}
    for r in study.runs:
        c, o = r.cfg, config.options_dict(r.cfg.method_options)
        assert o["factor"] == README_FACTOR[f"W{r.w_bits}/A{r.a_bits}"]
        assert (o["schedule"], o["t0"], o["start"], o["end"], o["bn"], o["recal_from"]) == (
            "exp", 1.0, start, 0.9, "recal_epoch", "window")
        assert (c.model.name, c.optim.name, c.optim.lr, c.optim.weight_decay, c.batch_size,
                c.epochs, c.optim.schedule, c.a_quant) == (model, "sgd", lr, wd, 100, 500, "step",
                                                           a_quant)
    if name == "resnet20":
        assert {(r.cfg.model.block, r.cfg.model.shortcut) for r in study.runs} == {
            ("convprelubn", "A")}
    smoke = sweep.load_spec(ROOT / "studies" / f"slb_reproduce_{name}.toml", scale="smoke")
    assert len(smoke.runs) == 24 and {r.epochs for r in smoke.runs} == {5}
    assert all(Path(r.cfg.data.root).is_absolute() for r in smoke.runs)


def test_matched_grids_share_the_readme_recipe_with_slbs_factor_per_cell(fake_cifar):
    study = sweep.load_spec(ROOT / "studies" / "cifar10_resnet20.toml",
                            sets=[f"data.root={fake_cifar}"])
    finals = [(r, config.to_dict(r.cfg)) for r in study.runs if r.stage == "final"] + \
        [(s, s.template) for s in study.slots]           # tuned variants: before tuning
    recipes = {json.dumps({k: v for k, v in cfg.items()
                           if k in ("optim", "model", "batch_size", "a_quant")}, default=str)
               for _, cfg in finals}
    assert len(recipes) == 1 and len(finals) == 205            # one recipe for every method
    slb = [(r, cfg) for r, cfg in finals if r.variant == "slb"]
    assert all(cfg["method"]["factor"] == README_FACTOR[f"W{r.w_bits}/A{r.a_bits}"]
               for r, cfg in slb) and len(slb) == 40
    trials = [r for r in study.runs if r.stage == "tune"]      # the tuning stage: the same
    assert len(trials) == 240 and {r.cfg.optim.lr for r in trials} == {0.05, 0.1, 0.2}
    assert {(r.cfg.optim.milestones, r.cfg.data.val_split) for r in trials} == {((50, 75), 0.1)}


def test_imagenet_reproduction_is_bireal_adam_ddp():
    study = sweep.load_spec(ROOT / "studies" / "slb_reproduce_imagenet.toml", scale="smoke")
    assert len(study.runs) == 9
    assert {r.cfg.method_options.factor for r in study.runs} == {1.05}
    c = study.runs[0].cfg
    assert (c.model.name, c.model.block, c.optim.name, c.optim.lr, c.optim.weight_decay) == (
        "bireal_resnet18", "convprelubn", "adam", 1e-3, 0.0)
    assert study.executor["tasks_per_node"] == 8 and study.executor["gpus_per_task"] == 1
    assert (c.batch_size, c.optim.milestones) == (100, (2.5, 3.75))   # smoke: CPU-sized
    assert "batch 256" in header(ROOT / "studies" / "slb_reproduce_imagenet.toml")


# --------------------------------------------------------------------------- the gap table

REFERENCE = ROOT / "studies" / "reference" / "slb_reported.csv"


def test_reference_csv_ships_the_readme_columns():
    ref = pd.read_csv(REFERENCE, comment="#")
    assert set(ref["source"]) == {"README Reported", "README Epoch400", "README Epoch500",
                                  "README This implementation"}
    cifar = ref[ref["dataset"] == "cifar10"]
    assert len(cifar) == 2 * 12 * 3                            # 2 models, 12 cells, 3 columns
    row = ref[(ref["model"] == "resnet20") & (ref["w_bits"] == 1) & (ref["a_bits"] == 1)]
    assert dict(zip(row["source"], row["top1"])) == {
        "README Reported": 85.5, "README Epoch400": 85.8, "README Epoch500": 86.2}
    assert (ref.groupby(["dataset", "model", "w_bits", "a_bits"])["source"].first()
            == "README Reported").all()                        # the paper's number comes first
    factors = cifar.set_index(["w_bits", "a_bits"])["temperature_speed"]
    assert all(factors.loc[(int(c[1]), int(c.split("A")[1]))].eq(f).all()
               for c, f in README_FACTOR.items())


OFFSETS = [0.1, -0.1, 0.2, -0.2, 0.0]     # mean 0, sample std sqrt(0.025) = 0.1581


@pytest.fixture
def planted(tmp_path) -> Path:
    """SLB ResNet-20 at W1/A1 (5 seeds around 85.0) and W1/A32 (5 seeds around 91.0),
    dorefa at W1/A1, a second SLB variant, against the shipped reference CSV."""
    root = tmp_path / "repro"
    man: list = []
    for s, off in enumerate(OFFSETS):
        write_run(root, f"a{s}", method="slb", variant="slb", a=1, acc=85.0 + off, seed=s,
                  epochs=500, manifest=man)
        write_run(root, f"b{s}", method="slb", variant="slb", a=32, acc=91.0 + off, seed=s,
                  epochs=500, manifest=man)
        write_run(root, f"c{s}", method="dorefa", a=1, acc=80.0 + off, seed=s, epochs=500,
                  manifest=man)
        write_run(root, f"d{s}", method="slb", variant="slb-sbn", a=1, acc=70.0 + off, seed=s,
                  epochs=500, manifest=man)
    files.atomic_write_json(root / "manifest.json", {"study": "repro", "scale": "full",
                                                       "runs": man})
    (root / "study.toml").write_text(f'[report]\nreference = "{REFERENCE}"\nours = "slb"\n')
    return root


def test_gap_table_on_planted_records(planted):
    st = report_pkg.load_study(planted)
    setting = st.settings()[0]
    from harness.report.reproduction import reproduction_table

    t = reproduction_table(st, setting)
    rows = {(r[0], r[1], r[3]): r for r in t.rows}
    assert {k[0] for k in rows} == {"SLB"}  # the default variant only, by its display name
    sd = math.sqrt(0.025)
    # W1/A1: measured 85.00 ± 0.16 (5); reported 85.5, 85.8, 86.2
    r = rows[("SLB", "W1/A1, 500 ep", "README Reported")]
    assert r[2] == "85.00 ± 0.16 (5)" and r[4] == "85.5" and r[5] == "-0.50"
    assert r[6] == f"{-0.5 / sd:+.2f}" == "-3.16"
    # 95% t-interval: 85 ± t(0.975, 4) * sd / sqrt(5) = 85 ± 2.7764 * 0.0707 = [84.80, 85.20]
    assert r[7] == "no"
    assert rows[("SLB", "W1/A1, 500 ep", "README Epoch500")][5] == "-1.20"
    # W1/A32: measured 91.0; reported 90.6 (outside), Epoch400 91.1 (inside), Epoch500 91.0
    assert rows[("SLB", "W1/A32, 500 ep", "README Reported")][5] == "+0.40"
    assert rows[("SLB", "W1/A32, 500 ep", "README Epoch400")][7] == "yes"
    assert rows[("SLB", "W1/A32, 500 ep", "README Epoch500")][5:] == ["+0.00", "+0.00", "yes"]
    assert len(t.rows) == 6
    d = t.data.set_index(["a_bits", "source"])
    assert d.loc[(1, "README Reported"), "gap_in_std"] == pytest.approx(-0.5 / sd)
    assert d.loc[(1, "README Reported"), "ci_high"] == pytest.approx(85.0 + 2.776445 * sd / 5 ** .5,
                                                                     abs=1e-4)
    assert not d.loc[(1, "README Reported"), "reported_in_ci"]


def test_gap_table_is_in_the_report_and_says_when_runs_are_not_full_scale(planted, tmp_path):
    report = report_pkg.write_report(planted, out=tmp_path / "out")
    md = report.read_text()
    assert "## Reproduction: measured vs reported" in md
    assert "at scale test (smaller data, width or budget than the recipe)" in md
    assert (tmp_path / "out" / "tables" / "reproduction_cifar10_resnet20.tex").exists()


def test_no_reference_no_gap_table(planted, tmp_path):
    (planted / "study.toml").write_text('[report]\nours = "slb"\n')
    md = report_pkg.write_report(planted, out=tmp_path / "out").read_text()
    assert "Reproduction: measured vs reported" not in md
