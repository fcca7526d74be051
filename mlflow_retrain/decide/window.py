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


def unseen(holdout: Window, seen_until: pd.Timestamp | None) -> Window:
    """The holdout's rows after `seen_until` (the end of Production's training rows), so both models
    are scored out of sample: a Production refitted through its own as-of has seen the start of the
    next holdout when cycles come closer together than the holdout (`docs/design.md#refit-after-the-gate`).
    The whole holdout when none of it was seen, or all of it (Production trained through as_of)."""
    if seen_until is None or not holdout.start < seen_until < holdout.end:
        return holdout
    return Window(seen_until, holdout.end)
