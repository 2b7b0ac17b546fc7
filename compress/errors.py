"""One error type for everything a user can get wrong, so the CLI can print it in one line."""
from __future__ import annotations

import difflib
from typing import Iterable


class CompressError(Exception):
    """A problem with the user's input or environment: a message and a hint on what to do.

    The CLI prints it as a single line on stderr and exits with `exit_code`; tracebacks
    are for bugs (or `--debug`), not for a wrong layer name.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The choices most like `name` (pip's 'maybe you meant'), best first."""
    choices = list(choices)
    found = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not found:  # fall back to shared prefixes: 'features.30.weight' -> 'features.3x...'
        stem = name.rsplit(".", 1)[0]
        found = [c for c in choices if c.startswith(stem[: max(1, len(stem) - 2)])][:n]
    return found


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A hint naming the closest choices, or all of them when there are few."""
    choices = list(choices)
    near = closest(name, choices)
    if near:
        return "did you mean " + " or ".join(repr(c) for c in near) + "?"
    if len(choices) <= 12:
        return "choose one of: " + ", ".join(choices)
    return f"none is close; there are {len(choices)} choices"
