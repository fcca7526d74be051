"""Naive baselines: what a holdout's rows would score with no model at all (seasonal naive or the
last value for regression, the prior for classification); `init` and the naive gate compare with them.

Why it is built this way: docs/design.md#measure-naive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable

import numpy as np
import pandas as pd

DAY, WEEK = timedelta(days=1), timedelta(days=7)


@dataclass(frozen=True)
class NaivePrediction:
    """A baseline's predictions for the holdout's rows, in their order, and how they were made."""

    y_pred: np.ndarray
    proba: np.ndarray | None  # classification: one column per class of the history, in sorted order
    kind: str  # "seasonal naive (a day back)", "last value", "prior"


def median_step(stamps: Iterable[pd.Timestamp] | pd.Series) -> timedelta | None:
    """The median gap between distinct timestamps (rows sharing a time are one step), or None for one time."""
    times = np.unique(_nanoseconds(stamps))
    if len(times) < 2:
        return None
    return timedelta(microseconds=float(np.median(np.diff(times))) / 1000)


def season_of(step: timedelta | None) -> timedelta | None:
    """The season a naive forecast repeats: a day for rows under a day apart (hourly, half-hourly),
    a week for daily rows; none for coarser data (a weekly or monthly season needs years of rows)."""
    if step is None or step <= timedelta(0):
        return None
    if step < DAY:
        return DAY
    return WEEK if step < WEEK else None


def last_value(history_times: Iterable[pd.Timestamp] | pd.Series, history_y: Iterable[float],
               holdout_times: Iterable[pd.Timestamp] | pd.Series) -> np.ndarray:
    """Every holdout row gets the history's last value (the mean of the rows at its newest time)."""
    times, values = _by_time(history_times, history_y)
    return np.full(len(_nanoseconds(holdout_times)), values[-1])


def seasonal_naive(history_times: Iterable[pd.Timestamp] | pd.Series, history_y: Iterable[float],
                   holdout_times: Iterable[pd.Timestamp] | pd.Series, season: timedelta) -> np.ndarray:
    """Each holdout row at time t gets the history's value at t - k seasons, k the fewest whole
    seasons that reach back into the history (the latest value at or before that time when no row
    sits exactly there); a row with no history that far back gets the last value."""
    times, values = _by_time(history_times, history_y)
    wanted = _nanoseconds(holdout_times)
    length = int(season / timedelta(microseconds=1)) * 1000
    seasons = np.maximum(1, np.ceil((wanted - times[-1]) / length)).astype(np.int64)
    back = wanted - seasons * length
    at = np.searchsorted(times, back, side="right") - 1
    return np.where(at >= 0, values[np.clip(at, 0, None)], values[-1])


def prior(history_y: Iterable[object], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of the base-rate predictor: each row gets the history's majority label
    and its class shares (columns in sorted class order, as a scikit-learn classifier orders them)."""
    classes, counts = np.unique(np.asarray(list(history_y)), return_counts=True)
    shares = counts / counts.sum()
    return np.full(rows, classes[int(np.argmax(counts))]), np.tile(shares, (rows, 1))


def naive_predictions(task: str, history_times: Iterable[pd.Timestamp] | pd.Series, history_y: Iterable[object],
                      holdout_times: Iterable[pd.Timestamp] | pd.Series) -> NaivePrediction:
    """The task's baseline for the holdout: the prior for classification; for regression seasonal
    naive when the history spans a whole season of its own frequency, else the last value.

    Raises ValueError on an empty history (there is nothing to repeat).
    """
    history_times, holdout = _nanoseconds(history_times), _nanoseconds(holdout_times)
    if not len(history_times):
        raise ValueError("a naive baseline needs at least one history row")
    if task == "classification":
        labels, proba = prior(history_y, len(holdout))
        return NaivePrediction(labels, proba, "prior")
    season = season_of(median_step(history_times))
    span = (history_times.max() - history_times.min()) / 1000
    if season is not None and span >= season / timedelta(microseconds=1):
        return NaivePrediction(seasonal_naive(history_times, history_y, holdout, season), None,
                               f"seasonal naive (a {'day' if season == DAY else 'week'} back)")
    return NaivePrediction(last_value(history_times, history_y, holdout), None, "last value")


def _nanoseconds(stamps: Iterable[pd.Timestamp] | pd.Series | np.ndarray) -> np.ndarray:
    """Timestamps as int64 nanoseconds since the epoch (UTC for zone-aware ones); ints pass through."""
    array = np.asarray(stamps)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    return pd.DatetimeIndex(pd.to_datetime(pd.Series(array), utc=True)).asi8


def _by_time(times: Iterable[pd.Timestamp] | pd.Series, values: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    """The history as one mean value per distinct time, sorted by time."""
    frame = pd.DataFrame({"t": _nanoseconds(times), "y": np.asarray(values, dtype=float)})
    if frame.empty:
        raise ValueError("a naive baseline needs at least one history row")
    means = frame.groupby("t", sort=True)["y"].mean()
    return means.index.to_numpy(np.int64), means.to_numpy(float)
