"""Method options: frozen dataclasses parsed from TOML/--set values (torch-free).

Declare each field with :func:`option` (default, help, choices, path). Unknown keys, wrong types
and values outside a field's choices raise a UserError naming ``method.<option>`` (several bad
options: a UserErrors holding one for each). An option
declared with ``path=True`` names a file: a study resolves it against the spec file's folder
when it reads the spec (jobs run in a code snapshot, not where the user typed the command).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from harness.config import coerce, type_hints
from harness.errors import UserError, did_you_mean, raise_all, require


def option(default: Any, help: str, *, choices: tuple | None = None, path: bool = False) -> Any:
    """A method option: its default, one line of help (listed by `python -m harness config
    --method NAME`) and, optionally, the allowed values; ``path``: it names a file."""
    meta = {"help": help, **({"choices": choices} if choices is not None else {}),
            **({"path": True} if path else {})}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class NoOptions:
    pass


def parse_options(options_cls: type, raw: dict[str, Any], prefix: str) -> Any:
    """Build a frozen options dataclass from a dict; unknown keys and bad types are errors.

    Fields may declare ``metadata={"choices": (...)}``; values outside are errors too. Every
    bad option is found: one raises its UserError, several a UserErrors holding each.
    """
    fields = {f.name: f for f in dataclasses.fields(options_cls)}
    hints = type_hints(options_cls)
    values, errors = {}, []
    for key, value in raw.items():
        try:
            values[key] = _option(fields, hints, key, value, prefix)
        except UserError as e:
            errors.append(e)
    raise_all(errors)
    return options_cls(**values)


def _option(fields: dict, hints: dict, key: str, value: Any, prefix: str) -> Any:
    """One option's value, converted to its type and checked against its choices."""
    known = ", ".join(sorted(fields)) or "none"
    hint = did_you_mean(key, fields).removeprefix("; ") if fields else ""
    require(key in fields, f"{prefix}.{key}",
            f"unknown option{f' ({hint})' if 'did you mean' in hint else ''}; known "
            f"options: {known}")
    value = coerce(value, hints[key], f"{prefix}.{key}")
    choices = fields[key].metadata.get("choices")
    require(choices is None or value in choices, f"{prefix}.{key}",
            f"{value!r} is not one of {list(choices or ())}")
    return value


def path_options(options_cls: type) -> set[str]:
    """The options that name files (``metadata={"path": True}``)."""
    return {f.name for f in dataclasses.fields(options_cls) if f.metadata.get("path")}
