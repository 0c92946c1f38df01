"""Errors that reach the user as one clear line from the command line (no traceback)."""

from __future__ import annotations

import difflib


class TKSError(Exception):
    """Base of every error caused by user input: a bad config value, a missing file, an unknown name."""


class UnknownNameError(TKSError, KeyError):
    """A name not in a registry; the message lists the choices and the closest match."""

    def __init__(self, what: str, name: str, choices: list[str]) -> None:
        close = difflib.get_close_matches(name, choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        super().__init__(f"unknown {what} {name!r}{hint}; choose one of: {', '.join(choices)}")

    def __str__(self) -> str:
        return str(self.args[0])  # KeyError would quote the message
