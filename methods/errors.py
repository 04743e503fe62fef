"""UserError: a mistake in what the user asked for (kept free of torch so the CLI starts fast).

The CLI prints it as one line `error: <field>: <message>` and exits with code 2.
"""
from __future__ import annotations


class UserError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
