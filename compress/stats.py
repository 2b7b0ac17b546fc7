"""How sure an accuracy is, and whether two models differ: Wilson intervals and McNemar's test.

Accuracies on 1017 test images move by about 1.4 points (one standard error) between equally
good models, so a bare difference says little. Two models scored on the same images are
compared with the images they disagree on: McNemar's exact test is a two-sided binomial test
on the discordant pairs (b: only A right, c: only B right), with the paired difference's
interval from the same counts.
"""
from __future__ import annotations

import math


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default), as fractions."""
    if n <= 0:
        raise ValueError("no images")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def interval(accuracy: float, n: int) -> tuple[float, float]:
    """Wilson 95% interval, in points, of an accuracy (%) measured on `n` images."""
    return tuple(100 * v for v in wilson(round(accuracy * n / 100), n))


def with_ci(accuracy: float | None, n: int | None, digits: int = 2) -> str:
    """'72.86% (95% CI 70.1–75.4)': an accuracy as the report and the CLI print it."""
    if accuracy is None:
        return "-"
    if not n:
        return f"{accuracy:.{digits}f}%"
    lo, hi = interval(accuracy, n)
    return f"{accuracy:.{digits}f}% ({lo:.1f}–{hi:.1f})"


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def pack_correct(correct: list[bool]) -> str:
    """Per-image correctness as hex (one bit per image): small enough for a manifest, exact
    enough for paired tests later without the model or the data."""
    bits = bytearray((len(correct) + 7) // 8)
    for i, c in enumerate(correct):
        if c:
            bits[i // 8] |= 1 << (i % 8)
    return f"{len(correct)}:{bits.hex()}"


def unpack_correct(packed: str) -> list[bool]:
    n, hexbits = packed.split(":", 1)
    bits = bytes.fromhex(hexbits)
    return [bool(bits[i // 8] >> (i % 8) & 1) for i in range(int(n))]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: P(a split at least as uneven as b:c | b + c discordant
    pairs, each equally likely either way)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(a_correct: list[bool], b_correct: list[bool], z: float = 1.96) -> dict:
    """A vs B on the same images: accuracies, their difference (points) with a 95% interval
    (Wald on the paired difference), the discordant counts and McNemar's exact p-value."""
    if len(a_correct) != len(b_correct) or not a_correct:
        raise ValueError("both models must be scored on the same, non-empty set of images")
    n = len(a_correct)
    b = sum(1 for x, y in zip(a_correct, b_correct) if x and not y)
    c = sum(1 for x, y in zip(a_correct, b_correct) if y and not x)
    diff = (b - c) / n
    se = math.sqrt(max(0.0, (b + c) / n - diff * diff) / n)
    return {"n": n, "acc_a": 100 * sum(a_correct) / n, "acc_b": 100 * sum(b_correct) / n,
            "diff_points": 100 * diff, "ci_points": (100 * (diff - z * se), 100 * (diff + z * se)),
            "only_a": b, "only_b": c, "p_value": mcnemar_exact(b, c)}
