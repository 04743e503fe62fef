"""A report over 10^4 records (issue 27): metrics.csv files of numbers only are checked in one
array, with the answers of the general, column-by-column check. (Timing: `bench --what
report --report-runs 10000`.)"""
from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest

from harness import records
from harness.tasks.base import get as get_task
from harness.tools.bench_records import report_line

STANDARD = list(get_task("classify").columns)


def _metrics(n: int = 5) -> pd.DataFrame:
    df = pd.DataFrame({c: [float(i + 1) for i in range(n)] for c in STANDARD})
    df["epoch"] = list(range(1, n + 1))
    df["quant_gap"] = [math.nan] * n          # a method's own column may hold nan
    return df


def _damage(df: pd.DataFrame, what: str) -> pd.DataFrame:
    df = df.copy()
    if what == "inf":
        df.loc[2, "test_acc"] = math.inf
    elif what == "two":
        df.loc[3, "test_acc"] = math.nan
        df.loc[1, "train_loss"] = -math.inf   # train_loss comes first: it is named
    elif what == "epochs":
        df["epoch"] = [1, 2, 4, 5, 6]
    elif what == "float epochs":
        df["epoch"] = [1.0, 2.0, 3.0, 4.0, 5.0]
    return df


@pytest.mark.parametrize("what, expected", [
    ("none", ""), ("float epochs", ""),
    ("inf", "metrics.csv row 3: test_acc = inf is not a finite number"),
    ("two", "metrics.csv row 2: train_loss = -inf is not a finite number"),
    ("epochs", "metrics.csv epochs are not numbered 1..n")])
def test_numbers_are_checked_at_once_with_the_general_answers(what, expected):
    df = _damage(_metrics(), what)
    general = records._check_columns(df, df.apply(pd.to_numeric, errors="coerce"), STANDARD, 5)
    assert records._check_numbers(df, STANDARD, 5) == general
    assert general.replace("np.float64(", "").replace(")", "") == expected


@pytest.mark.parametrize("what", ["none", "float epochs", "inf", "two", "epochs", "short",
                                  "text", "1_000", "ragged"])
def test_metrics_read_without_pandas_answer_as_pandas_does(tmp_path, what):
    """metrics.csv of plain numbers (the trainer's) is parsed without pandas; the answer (the
    problem, or the columns and values) is the one pandas' reading of the same file gives."""
    df = _damage(_metrics(), what if what in ("inf", "two", "epochs", "float epochs") else "none")
    text = df.to_csv(index=False, na_rep="nan")
    if what == "short":
        text = "\n".join(text.splitlines()[:-1]) + "\n"
    elif what in ("text", "1_000", "ragged"):
        lines = text.splitlines()
        cells = lines[3].split(",")
        cells[STANDARD.index("test_acc")] = {"text": "abc", "1_000": "1_000",
                                             "ragged": "1,2"}[what]
        text = "\n".join(lines[:3] + [",".join(cells)] + lines[4:]) + "\n"
    quoted = pd.read_csv(__import__("io").StringIO(text)).to_csv(
        index=False, na_rep="nan", quoting=csv.QUOTE_NONNUMERIC) if what != "ragged" else \
        text.replace("epoch", '"epoch"', 1)  # a quote: read by pandas
    answers = []
    for name, body in (("plain", text), ("quoted", quoted)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.csv").write_text(body)
        answers.append(records._read_metrics(records.RunRecord(tmp_path / name), STANDARD,
                                             None, 5))
    fast = records._plain_numbers(text) is not None
    assert fast == (what not in ("text", "1_000", "ragged"))
    assert records._plain_numbers(quoted) is None
    plain, pandas_ = answers
    if isinstance(pandas_, str):
        assert plain == pandas_ and pandas_
    else:
        assert plain[:2] == pandas_[:2] and np.array_equal(plain[2], pandas_[2], equal_nan=True)
    if what != "ragged":  # pandas decides a ragged file (with usecols it reads one)
        assert isinstance(pandas_, str) == (what not in ("none", "float epochs"))


@pytest.mark.parametrize("cell, column, expected", [
    ("\xa00.1", "lr", "metrics.csv row 3: lr = '\\xa00.1' is not a finite number"),
    ("0.1\u3000", "lr", "metrics.csv row 3: lr = '0.1\\u3000' is not a finite number"),
    ("\x1c0.1", "lr", "metrics.csv row 3: lr = '\\x1c0.1' is not a finite number"),
    ("NAN", "lr", "metrics.csv row 3: lr = 'NAN' is not a finite number"),
    ("+nan", "lr", "metrics.csv row 3: lr = '+nan' is not a finite number"),
    (" inf", "lr", "metrics.csv row 3: lr = ' inf' is not a finite number"),
    ("\u20030.1", "quant_gap", math.nan), (" inf", "quant_gap", math.nan),
    ("-Infinity", "lr", "metrics.csv row 3: lr = np.float64(-inf) is not a finite number"),
    ("-NaN", "quant_gap", math.nan), ("+INF", "quant_gap", math.inf)])
def test_numbers_numpy_reads_and_pandas_does_not_are_not_numbers(tmp_path, cell, column,
                                                                  expected):
    """numpy's reader strips Unicode whitespace and reads NAN, +nan, ' inf' as numbers;
    pandas (the rule for a metrics.csv) reads them as text: a run with such a standard cell is
    corrupt, a method's column holds nan there, whichever reader parses the file."""
    df = _metrics()
    text = df.to_csv(index=False, na_rep="nan")
    lines = text.splitlines()
    cells = lines[3].split(",")
    cells[list(df.columns).index(column)] = cell
    text = "\n".join(lines[:3] + [",".join(cells)] + lines[4:]) + "\n"
    answers = []
    for name, body in (("plain", text), ("pandas", text.replace("epoch", '"epoch"', 1))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.csv").write_text(body, encoding="utf-8")
        answers.append(records._read_metrics(records.RunRecord(tmp_path / name), STANDARD,
                                             None, 5))
    plain, pandas_ = answers
    if isinstance(expected, str):
        assert plain == pandas_ == expected
    else:
        assert plain[:2] == pandas_[:2]
        got = plain[2][2, plain[0].index(column)]
        assert got == expected or (math.isnan(got) and math.isnan(expected))
        assert np.array_equal(plain[2], pandas_[2], equal_nan=True)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])  # numpy's reader, pandas'
@pytest.mark.parametrize("column", ["quant_gap", "lr"])
def test_an_integer_beyond_float_range_is_inf_not_a_crash(tmp_path, newline, column):
    """pandas reads "1" * 400 as a Python int its to_numeric cannot coerce (OverflowError
    out of load_run, a report's traceback); it is inf as numpy reads it: nothing in a
    method's column, a corrupt run in a standard one."""
    df = _metrics()
    df[column] = df[column].astype(object)
    df.loc[2, column] = "-" + "1" * 400
    (tmp_path / "metrics.csv").write_text(df.to_csv(index=False, na_rep="nan",
                                                    lineterminator=newline))
    got = records._read_metrics(records.RunRecord(tmp_path), STANDARD, None, 5)
    if column == "lr":
        assert got.startswith("metrics.csv row 3: lr = ") and "is not a finite number" in got
    else:
        assert got[2][2, got[0].index("quant_gap")] == -math.inf


def test_report_lines_hold_their_targets():
    assert report_line(10_000, 29.9) == ("PASS report over 10000 synthetic runs: 29.9 s "
                                         "(target < 30 s)")
    assert report_line(10_000, 30.0).startswith("MISS")
    assert report_line(1000, 14.0).startswith("PASS") and "(target < 15 s)" in \
        report_line(1000, 14.0)
    assert "PASS" not in report_line(300, 1.0) and "MISS" not in report_line(300, 1.0)
