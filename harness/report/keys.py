"""study.toml's [report] table: its keys and their checks (no pandas: `sweep` checks a spec's
[report] table with these before anything is written, the report again when it reads one)."""
from __future__ import annotations

from typing import Any

from harness.errors import did_you_mean

# key -> (check, what to write). The renames map an internal id to the text tables, figures
# and answers print.
_NAMES = (lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str)
                                                and x.strip() for k, x in v.items()),
          'a table of id = "display name"')
def _width(v: Any) -> bool:
    """"column", "text" or a number of inches (bool is not a number here)."""
    if isinstance(v, str):
        return v in ("column", "text")
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 2.0 <= v <= 10.0


REPORT_KEYS: dict[str, tuple[Any, str]] = {
    "ours": (lambda v: isinstance(v, str), 'a method name, e.g. "slb"'),
    "reference": (lambda v: isinstance(v, str), "the path of a CSV of reported numbers"),
    "reference_dataset": (lambda v: isinstance(v, str), 'a dataset label, e.g. "cifar10"'),
    "methods": (_NAMES[0], _NAMES[1] + ', e.g. { dorefa = "DoReFa-Net" }'),
    "variants": (_NAMES[0], _NAMES[1] + ', e.g. { "slb-sbn4" = "SLB, SBN every 4 steps" }'),
    "settings": (_NAMES[0], _NAMES[1] + ' for a dataset, a model or a whole setting, e.g. '
                 '{ imagefolder = "CIFAR-10 (JPEG copy)", resnet20 = "ResNet-20" }'),
    # the width figures are drawn at (their size on the page): a two-column venue's column
    # (3.25 in), NeurIPS' text width (5.5 in, the default), or inches (harness/report/layout.py)
    "figure_width": (_width, '"column" (3.25 in), "text" (5.5 in, the default) or a number '
                             'of inches from 2 to 10, e.g. figure_width = 6.75'),
}


def check_report_table(table: Any) -> list[tuple[str, str]]:
    """Problems of a study's [report] table, as (field, message): a wrong type is one;
    an unknown key is one too (the report itself only notes those: see
    ``load._report_options``; a spec given to `sweep` must not hold one)."""
    if not isinstance(table, dict):
        return [("report", "must be a table: [report]")]
    out = []
    for k, v in table.items():
        if k not in REPORT_KEYS:
            hint = did_you_mean(k, REPORT_KEYS)
            hint = hint + " " if "did you mean" in hint else "; "
            out.append((f"report.{k}", f"unknown key{hint}[report] takes "
                                       f"{', '.join(REPORT_KEYS)}"))
        elif not REPORT_KEYS[k][0](v):
            out.append((f"report.{k}", f"is {v!r}; write {REPORT_KEYS[k][1]}"))
    return out


NAME_TABLES = ("methods", "variants", "settings")


def name_problems(table: Any, known: dict[str, set[str]],
                  ours_field: str = "report.ours") -> list[tuple[str, str]]:
    """Names in a [report] table that name nothing of the study, as (field, message) with
    "did you mean": ``ours`` (a method) and every key of the methods, variants and settings
    tables. ``known``: the study's names per table ("methods", "variants", "settings"); a
    settings key may also extend a known "data / model" label (a setting that differs in
    more keys); None: not known yet (a spec whose grid is broken), not checked."""
    out = []
    table = table if isinstance(table, dict) else {}
    ours = table.get("ours")
    if isinstance(ours, str) and ours not in known["methods"]:
        out.append((ours_field, f"{ours!r} has no runs in this study (its methods: "
                                f"{', '.join(sorted(known['methods'])) or 'none'})"
                                f"{_hint(ours, known['methods'])}"))
    for key in NAME_TABLES:
        names = table.get(key) if known.get(key) is not None else None
        for name in names if isinstance(names, dict) else ():
            if name in known[key] or (key == "settings" and any(
                    name.startswith(f"{c} ") for c in known[key] if " / " in c)):
                continue
            out.append((f"report.{key}.{name}",
                        f"names no {key[:-1]} of this study{_hint(name, known[key])}"))
    return out


def _hint(name: str, choices: set[str]) -> str:
    return did_you_mean(name, choices) if choices else "; the study has none yet"
