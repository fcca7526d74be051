"""What the decision core is given: plain numbers gathered by whoever observed them.

The cycle fills these from the registry and the data, the backtest from its replay, the monitor per
window; the triggers read nothing else, so all of them decide alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mlflow_retrain.decide.words import DAY
from mlflow_retrain.measure.columns import DriftNumbers


@dataclass
class WindowScore:
    """The serving model's metric on one monitoring window; None is a gap (no rows, or in-sample)."""

    window: str
    rows: int
    metric: float | None


@dataclass(frozen=True)
class Observations:
    """Everything a trigger may read. `scores` are the recent windows, oldest first, with the windows
    that overlap Production's training rows already blanked (`assess.out_of_sample`)."""

    metric: str
    higher_is_better: bool
    as_of: pd.Timestamp
    scores: tuple[WindowScore, ...] = ()
    drift: DriftNumbers | None = None
    trained_at: pd.Timestamp | None = None  # when Production was trained, in data time
    seen_until: pd.Timestamp | None = None  # the end of Production's training window
    rows_since: int = 0  # labelled rows after trained_at, up to as_of
    estimate: float | None = None  # the metric on the newest window, estimated without labels (`estimate.py`)
    unit: str = DAY  # the unit of spans in the reasons (`words.unit_for` the monitoring window)
    rejected_at: pd.Timestamp | None = None  # the data time of the newest rejected candidate (`max_age` waits)

    @property
    def latest(self) -> WindowScore:
        return self.scores[-1] if self.scores else WindowScore("", 0, None)
