"""Property tests (Hypothesis): whatever bytes, JSON or TOML a study folder holds, the record
loader says ``corrupt`` (or reads a valid record) and the spec reader raises its own errors,
never anything else (issue 25).

- records.load_run over random bytes in config.json and summary.json, random JSON values
  (nested up to thousands of levels), and a valid completed record with random fields
  replaced by random JSON: 300 + 300 + 400 examples;
- study.spec.load_spec over random text and over the valid spec with random tables and
  values put in (serialised as TOML): 150 + 350 examples, SpecErrors or UserError only.

Derandomized (the same examples every run) and without an example database on disk.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import tiny_cfg
from harness import config, records
from harness.errors import UserError
from harness.run import resolve
from harness.study import spec

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

leaves = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
          | st.text(max_size=20))
json_values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                           max_leaves=30)


@st.composite
def deep(draw) -> str:
    """JSON nested 1..5000 levels deep (lists and objects mixed), as text."""
    depth = draw(st.integers(1, 5000))
    kinds = draw(st.lists(st.sampled_from("[{"), min_size=1, max_size=8))
    opened = [kinds[i % len(kinds)] for i in range(depth)]
    head = "".join('{"k":' if k == "{" else "[" for k in opened)
    tail = "".join("}" if k == "{" else "]" for k in reversed(opened))
    return head + draw(st.sampled_from(["1", "null", '"x"', "[]"])) + tail


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A completed run's records (config.json, summary.json, metrics.csv)."""
    from harness.run.rundir import run

    out = tmp_path_factory.mktemp("fuzz") / "run"
    run(tiny_cfg("ste", epochs=1), out, echo=lambda s: None)
    for name in list(out.iterdir()):
        if name.name not in ("config.json", "summary.json", "metrics.csv"):
            shutil.rmtree(name) if name.is_dir() else name.unlink()
    return out


def _load(run_dir: Path) -> records.RunRecord:
    rec = records.load_run(run_dir)  # must never raise
    assert rec.status in records.STATUSES + ("corrupt", "pending")
    if rec.problem:
        assert rec.status == "corrupt"
    return rec


@settings(max_examples=300, **SETTINGS)
@given(which=st.sampled_from(["config.json", "summary.json"]), data=st.binary(max_size=400))
def test_random_bytes_in_a_record_make_it_corrupt_never_a_crash(finished, tmp_path, which,
                                                                 data):
    run = tmp_path / "r"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(finished, run)
    (run / which).write_bytes(data)
    rec = _load(run)
    assert rec.status == "corrupt" or which == "summary.json"  # (no summary: pending)


@settings(max_examples=300, **SETTINGS)
@given(which=st.sampled_from(["config.json", "summary.json"]),
       text=json_values.map(lambda v: json.dumps(v, allow_nan=True)) | deep())
def test_random_json_in_a_record_is_read_or_corrupt(finished, tmp_path, which, text):
    run = tmp_path / "r"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(finished, run)
    (run / which).write_text(text)
    _load(run)


SUMMARY_KEYS = ["status", "epochs", "epochs_completed", "final_test_acc", "best_test_acc",
                "config_hash", "env", "method_info", "task", "metric", "final_metric",
                "best_metric", "final_metrics", "changed_after_training", "error",
                "wall_time_s", "data_fingerprint", "inference_cost"]
CONFIG_KEYS = ["epochs", "task", "config_hash", "method", "model", "data", "optim", "seed"]


@settings(max_examples=400, **SETTINGS)
@given(which=st.sampled_from(["config.json", "summary.json"]),
       changes=st.dictionaries(st.sampled_from(SUMMARY_KEYS + CONFIG_KEYS), json_values,
                               min_size=1, max_size=3))
def test_a_valid_record_with_random_fields_is_read_or_corrupt(finished, tmp_path, which,
                                                               changes):
    run = tmp_path / "r"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(finished, run)
    d = json.loads((run / which).read_text())
    d.update(changes)
    (run / which).write_text(json.dumps(d, allow_nan=True))
    _load(run)


# --------------------------------------------------------------------------- specs

SPEC = {
    "study": {"name": "fuzz"},
    "recipe": {"model": {"name": "small_cnn", "width": 0.25},
               "data": {"name": "digits", "subset_train": 100}},
    "grid": {"bits": [[1, 32]], "epochs": [1], "seeds": [0]},
    "variants": {"ste": {"method": "ste"}},
}


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, (int, str)):
        return json.dumps(v) if isinstance(v, str) else str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()
                               if x is not None) + "}"
    return '""'  # None: TOML has no null


def to_toml(doc: dict) -> str:
    return "\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc.items()
                     if v is not None) + "\n"


SECTIONS = ["study", "recipe", "grid", "variants", "executor", "scales", "report",
            "cell_recipe"]
PATHS = [("recipe", "optim"), ("recipe", "optim.lr"), ("recipe", "model"),
         ("recipe", "data"), ("recipe", "epochs"), ("recipe", "sr"), ("grid", "bits"),
         ("grid", "epochs"), ("grid", "seeds"), ("grid", "exclude"), ("grid", "variants"),
         ("variants", "ste"), ("variants", "x"), ("study", "name"), ("executor", "sbatch"),
         ("executor", "timeout_min"), ("scales", "smoke"), ("report", "ours"),
         ("cell_recipe", "W1/A32"), ("variants", "ste.options")]


def _check_spec(path: Path, text: str) -> None:
    path.write_text(text)
    try:
        spec.load_spec(path)
    except (spec.SpecErrors, UserError):
        pass


@settings(max_examples=150, **SETTINGS)
@given(text=st.text(max_size=300))
def test_random_text_as_a_spec_is_a_spec_error(tmp_path, text):
    _check_spec(tmp_path / "s.toml", text)


@settings(max_examples=350, **SETTINGS)
@given(changes=st.lists(st.tuples(st.sampled_from(PATHS), json_values), min_size=1,
                        max_size=3),
       section=st.sampled_from(SECTIONS), whole=json_values)
def test_a_spec_with_random_values_is_read_or_spec_errors(tmp_path, changes, section, whole):
    doc = json.loads(json.dumps(SPEC))
    for (sec, key), value in changes:
        table = doc.setdefault(sec, {})
        if not isinstance(table, dict):
            continue
        head, _, rest = key.partition(".")
        if rest and isinstance(table.get(head), dict):
            table[head][rest] = value
        else:
            table[key] = value
    if whole is not None and section not in doc:
        doc[section] = whole
    _check_spec(tmp_path / "s.toml", to_toml(doc))


def test_the_fuzzed_spec_itself_is_valid(tmp_path):
    """The starting point of the spec fuzz is a valid spec (so the fuzz reaches expansion)."""
    (tmp_path / "s.toml").write_text(to_toml(SPEC))
    study = spec.load_spec(tmp_path / "s.toml")
    assert len(study.runs) == 1 and resolve.config_hash(study.runs[0].cfg)
    assert config.flatten(SPEC["recipe"])["model.width"] == 0.25
