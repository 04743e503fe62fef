"""A report over 10^4 records (issue 27): metrics.csv files of numbers only are checked in one
array, with the answers of the general, column-by-column check. (Timing: `bench --what
report --report-runs 10000`.)"""
from __future__ import annotations

import math

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
    general = records._check_columns(df, df.apply(pd.to_numeric, errors="coerce"), STANDARD,
                                     "test_acc", 5)
    assert records._check_numbers(df, STANDARD, "test_acc", 5) == general
    assert general.replace("np.float64(", "").replace(")", "") == expected


def test_report_lines_hold_their_targets():
    assert report_line(10_000, 29.9) == ("PASS report over 10000 synthetic runs: 29.9 s "
                                         "(target < 30 s)")
    assert report_line(10_000, 30.0).startswith("MISS")
    assert report_line(1000, 14.0).startswith("PASS") and "(target < 15 s)" in \
        report_line(1000, 14.0)
    assert "PASS" not in report_line(300, 1.0) and "MISS" not in report_line(300, 1.0)
