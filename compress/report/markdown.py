"""Markdown building blocks: percentages, accuracies, tables, links."""
from __future__ import annotations

from compress.report.runs import RunData


# --------------------------------------------------------------------------- markdown
def fmt_pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def fmt_acc(x) -> str:
    return "–" if x is None else f"{x:.2f}%"


def md_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def link(folder_rel: str, path: str) -> str:
    return f"{folder_rel}/{path}" if folder_rel else path


def split_sizes(runs: list[RunData]) -> tuple[int | None, int | None]:
    """(validation images, test images) of the runs' data."""
    ds = runs[0].manifest.get("dataset", {}) if runs else {}
    return ds.get("val_images") or None, ds.get("test_images")
