"""A variant's method as the spec sees it: its options parsed once per distinct set, what
they change of the shared recipe, the files they name, the bit widths it supports."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.study.spec.schema import fix_path
from methods.base import load_all
from methods.options import path_options

_PARSED: dict[str, Any] = {}


def forget_parsed_options() -> None:
    _PARSED.clear()


def parsed_options(method: str, raw: dict[str, Any]) -> Any:
    """A method's options parsed once per distinct set (every run of a variant's cell shares
    the frozen object; the runs' configs carry it). UserError when they do not parse."""
    key = json.dumps([method, raw], sort_keys=True, default=str)
    if key not in _PARSED:
        from methods.base import get

        _PARSED[key] = get(method).parse_options(dict(raw))
    return _PARSED[key]


def method_recipe_changes(method: str, options: dict[str, Any]) -> list[str]:
    """What a method's options change of the shared recipe (e.g. its own activation
    quantizer); such a variant is not a matched comparison."""
    cls = load_all().get(method)
    if cls is None:
        return []  # reported when the runs are resolved
    try:
        return cls.recipe_changes(parsed_options(method, options))
    except UserError:
        return []  # reported when the runs are resolved


def fix_option_paths(method: str, options: Any, spec_dir: Path) -> None:
    """A method's file options (``metadata={"path": True}``, e.g. SLB's init_from), like
    data.root; whether the file exists is checked when the options are parsed."""
    cls = load_all().get(method)
    if cls is None or not isinstance(options, dict):
        return
    for key in path_options(cls.Options):
        fix_path(options, key, spec_dir)


def fix_method_paths(flat: dict[str, Any], spec_dir: Path) -> None:
    """Flat ``method.<option>`` keys (a scale's ``set``) that name files for some method."""
    for cls in load_all().values():
        for key in path_options(cls.Options):
            fix_path(flat, f"method.{key}", spec_dir)


def unsupported(method: str, w_bits: int) -> str | None:
    cls = load_all().get(method)
    if cls is not None and w_bits not in cls.bits:
        return f"{method} cannot run {w_bits}-bit weights (supports {sorted(cls.bits)})"
    return None
