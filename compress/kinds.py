"""What a pruning run removes, as a type rather than a string compared in many places.

`Kind` is a `str` enum: it equals its value ("filter" == Kind.FILTER), so manifests, checkpoints
and command lines keep their plain strings and `Kind(text)` reads them back.
"""
from __future__ import annotations

from enum import Enum

from compress.errors import CompressError, did_you_mean


class Kind(str, Enum):
    UNSTRUCTURED = "unstructured"  # single weights, per-weight masks
    FILTER = "filter"  # whole output filters (and what is coupled to them): removable by slim
    NM = "nm"  # N of every M consecutive input weights (2:4 for sparse tensor cores)

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def structured(self) -> bool:
        """Whether whole filters go, so channel removal (slim) can make the model smaller."""
        return self is Kind.FILTER

    @property
    def definition(self) -> "Kind":
        """The sparsity definition it is measured by: filters for filter pruning, weights otherwise."""
        return Kind.FILTER if self is Kind.FILTER else Kind.UNSTRUCTURED

    @classmethod
    def parse(cls, text: str | Kind) -> Kind:
        try:
            return cls(text)
        except ValueError:
            raise CompressError(f"unknown pruning kind {text!r}", did_you_mean(str(text), [k.value for k in cls])) from None
