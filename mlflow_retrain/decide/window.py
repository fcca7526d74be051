"""Data time: one `(start, end]` window type, and the one place rows are cut by it.

Windows are half-open on the left, so consecutive windows never share a row. Every slice of a
time-sorted frame by a window (the data's cut, the monitor's per-window scores, the backtest's
replay) goes through `Window.positions`. Pure: pandas only, no MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pandas as pd


@dataclass(frozen=True)
class Window:
    """A span of time `(start, end]`."""

    start: pd.Timestamp
    end: pd.Timestamp

    def iso(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"

    @classmethod
    def ending(cls, end: pd.Timestamp, span: timedelta) -> "Window":
        return cls(end - pd.Timedelta(span), end)

    @classmethod
    def parse(cls, text: str) -> "Window":
        start, _, end = text.partition("..")
        return cls(pd.Timestamp(start), pd.Timestamp(end))

    @classmethod
    def recent(cls, end: pd.Timestamp, span: timedelta, count: int) -> list["Window"]:
        """The `count` consecutive windows of `span` ending at `end`, oldest first."""
        step = pd.Timedelta(span)
        return [cls.ending(end - step * i, span) for i in reversed(range(count))]

    def positions(self, timestamps: pd.Series) -> tuple[int, int]:
        """`(lo, hi)` such that `frame.iloc[lo:hi]` holds this window's rows of a time-sorted frame."""
        return (int(timestamps.searchsorted(self.start, side="right")),
                int(timestamps.searchsorted(self.end, side="right")))
