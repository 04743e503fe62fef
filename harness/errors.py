"""UserError: a mistake in what the user asked for (kept free of torch so the CLI starts fast).

The CLI prints it as one line `error: <field>: <message>` (a UserErrors: one line for each
mistake it holds) and exits with code 2. Checks are
written ``require(cond, field, message)``: the field names what to change (``method.<opt>``,
``w_bits``, ``data.root``), the message what is wrong and how to fix it.
"""
from __future__ import annotations


class UserError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class UserErrors(UserError):
    """Several independent mistakes found at once (e.g. every bad option of a method): each
    one a UserError of its own. ``field`` is the first one's; the CLI prints one line each."""
    def __init__(self, errors: list[UserError]):
        ValueError.__init__(self, "; ".join(str(e) for e in errors))
        self.field = errors[0].field
        self.errors = list(errors)


def each(error: UserError) -> list[UserError]:
    """The single mistakes of ``error``: itself, or those a UserErrors holds."""
    return list(getattr(error, "errors", [error]))


def raise_all(errors: list[UserError]) -> None:
    """Nothing when ``errors`` is empty, the one error, or a UserErrors holding them all."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise UserErrors(errors)


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
