"""The values a numeric setting may take, checked and put in words in one place: the job options
(``pipeline/options.py``) and the training settings (``train/config.py``) both use it."""

from __future__ import annotations

import math
from dataclasses import dataclass


def is_finite(value: float) -> bool:
    """Not NaN or infinite; a Python int always is (math.isfinite overflows past 1e308)."""
    return isinstance(value, int) or math.isfinite(value)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class ValueRange:
    """ge/gt: the lower bound (>=, >), le/lt: the upper (<=, <); None = unbounded that way.
    NaN and infinities are never in a range (NaN passes every comparison, inf a one-sided bound)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __contains__(self, value: float) -> bool:
        return (
            is_finite(value)
            and (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def words(self) -> str:
        """'between 0 and 1', 'at least 1', 'more than 0 and less than 1', ... ('' when unbounded)."""
        if self.ge is not None and self.le is not None:
            return f"between {_number(self.ge)} and {_number(self.le)}"
        return self._join(("at least", "more than", "at most", "less than"))

    def symbols(self) -> str:
        """The same for a table: '0..1', '≥ 1', '> 0 and < 1', ... ('' when unbounded)."""
        if self.ge is not None and self.le is not None:
            return f"{_number(self.ge)}..{_number(self.le)}"
        return self._join(("≥", ">", "≤", "<"))

    def _join(self, names: tuple[str, str, str, str]) -> str:
        """Each bound that is set, as its name (in ge, gt, le, lt order) and number, joined with 'and'."""
        bounds = (self.ge, self.gt, self.le, self.lt)
        return " and ".join(f"{name} {_number(bound)}" for name, bound in zip(names, bounds) if bound is not None)


POSITIVE = ValueRange(gt=0)  # a limit: more than 0, and finite (inf would hold a worker for good)
