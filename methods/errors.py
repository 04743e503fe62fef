"""UserError: a mistake in what the user asked for (kept free of torch so the CLI starts fast).

The CLI prints it as one line `error: <field>: <message>` and exits with code 2. Checks are
written ``require(cond, field, message)``: the field names what to change (``method.<opt>``,
``w_bits``, ``data.root``), the message what is wrong and how to fix it.
"""
from __future__ import annotations


class UserError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def require(cond: object, field: str, message: str) -> None:
    """Raise ``UserError(field, message)`` unless ``cond`` is true."""
    if not cond:
        raise UserError(field, message)


def did_you_mean(name: str, choices) -> str:
    """"; did you mean 'x'?" for the closest of ``choices``, else the full list."""
    import difflib

    options = sorted(str(c) for c in choices)
    close = difflib.get_close_matches(str(name), options, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; choose one of {options}"
