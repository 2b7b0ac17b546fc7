"""The shared rich consoles: tables and results on stdout, notices and progress on stderr."""
from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Piped output (logs, CI) gets 120 columns rather than rich's 80, so tables do not wrap.
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120
out = Console(highlight=False, width=_WIDTH)
err = Console(stderr=True, highlight=False, width=_WIDTH)


def counted(n, noun: str, spec: str = "") -> str:
    """A count and its noun, singular for exactly one: '1 run', '3 runs', '0.5 points'."""
    return f"{n:{spec}} {noun}{'' if n == 1 else 's'}"


def notice(message: str) -> None:
    """A visible, non-fatal remark (which data is in use, what was skipped and why)."""
    err.print(f"[yellow]note:[/yellow] {message}")


class _NoProgress:
    """Stands in for the progress display when nothing should be shown."""

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    def advance(self, *a, **k):
        pass


def progress(transient: bool = False, show: bool = True) -> Progress | _NoProgress:
    """A progress display with a free-text status field for loss/accuracy/throughput
    (a silent stand-in with the same methods when `show` is False)."""
    if not show:
        return _NoProgress()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=transient,
    )
