"""Error figures of a set of evaluated predictions, the same for the live consumer, the report
and an offline computation: count, RMSE, MAE and bias (mean of predicted - actual)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    count: int
    sum_error: float
    sum_squared: float
    sum_absolute: float

    @classmethod
    def of(cls, errors: Iterable[float]) -> Summary:
        n = total = squared = absolute = 0.0
        for error in errors:
            n += 1
            total += error
            squared += error * error
            absolute += abs(error)
        return cls(int(n), total, squared, absolute)

    @classmethod
    def total(cls, parts: Iterable[Summary]) -> Summary:
        """The figures of the union of disjoint sets (hours, say) from theirs."""
        count = total = squared = absolute = 0.0
        for s in parts:
            count += s.count
            total += s.sum_error
            squared += s.sum_squared
            absolute += s.sum_absolute
        return cls(int(count), total, squared, absolute)

    @property
    def rmse(self) -> float:
        return math.sqrt(self.sum_squared / self.count) if self.count else math.nan

    @property
    def mae(self) -> float:
        return self.sum_absolute / self.count if self.count else math.nan

    @property
    def bias(self) -> float:
        return self.sum_error / self.count if self.count else math.nan


def summarize(rows: Sequence) -> Summary:
    """rows: anything with `.predicted` and `.actual` (rides.stream.evaluation.sums.Evaluated)."""
    return Summary.of(r.predicted - r.actual for r in rows)
