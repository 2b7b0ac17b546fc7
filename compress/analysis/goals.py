"""A plan's goal, parsed and checked: `--speedup X` (over the dense model) or `--latency-ms MS`.
Light on purpose (no torch): the CLI builds its parser from these without importing the planner."""
from __future__ import annotations

import math

from compress.errors import CompressError


def _number(text: str, flag: str, example: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise CompressError(f"{flag} {text!r} is not a number", example) from None


def speedup_value(text: str) -> float:
    """`--speedup`: a finite number > 1 (argparse type)."""
    value = _number(text, "--speedup", "e.g. --speedup 2.5 (2.5x faster than dense)")
    if not math.isfinite(value) or value <= 1:
        raise CompressError(f"--speedup {text} must be a number > 1 (a speed-up over the dense model)",
                            "e.g. --speedup 2.5; for a time budget use --latency-ms")
    return value


def latency_value(text: str) -> float:
    """`--latency-ms`: a finite number > 0 (argparse type)."""
    value = _number(text, "--latency-ms", "e.g. --latency-ms 30")
    if not math.isfinite(value) or value <= 0:
        raise CompressError(f"--latency-ms {text} must be a positive number of milliseconds", "e.g. --latency-ms 30")
    return value
