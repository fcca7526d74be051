"""Naive baselines: the season follows the data's frequency, seasonal naive repeats the newest whole
season the history holds, the last value stands in when there is no season, and the prior predicts
the history's base rates."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from mlflow_retrain.measure.metrics import score
from mlflow_retrain.measure.naive import (last_value, median_step, naive_predictions, prior, season_of,
                                          seasonal_naive)


@pytest.mark.parametrize(("freq", "season"), [("30min", timedelta(days=1)), ("h", timedelta(days=1)),
                                              ("D", timedelta(days=7)), ("W", None), ("MS", None)])
def test_the_season_follows_the_rows_frequency(freq, season):
    stamps = pd.Series(pd.date_range("2024-01-01", periods=40, freq=freq, tz="UTC"))
    # rows sharing a time (several stores) are one step, not a zero gap
    assert season_of(median_step(pd.concat([stamps, stamps]))) == season


def test_seasonal_naive_repeats_the_newest_whole_day_and_tracks_a_growing_level():
    stamps = pd.date_range("2024-01-01", periods=24 * 14, freq="h", tz="UTC")
    level = np.arange(len(stamps)) / 24.0  # a level that grows 1 a day
    y = 10 + level + 5 * np.sin(2 * np.pi * stamps.hour / 24)
    history, holdout = slice(0, 24 * 12), slice(24 * 12, None)
    naive = naive_predictions("regression", stamps[history], y[history], stamps[holdout])
    assert naive.kind == "seasonal naive (a day back)" and naive.proba is None
    # a holdout of two days: both days repeat the history's last day, hour for hour
    last_day = y[24 * 11:24 * 12]
    assert np.allclose(naive.y_pred, np.concatenate([last_day, last_day]))
    # it misses by the growth alone (1 a day, 1.5 on average over two days), far less than the last value
    seasonal = score("regression", y[holdout], naive.y_pred)["mae"]
    flat = score("regression", y[holdout], last_value(stamps[history], y[history], stamps[holdout]))["mae"]
    assert seasonal == pytest.approx(1.5, abs=0.05) and flat > 2 * seasonal


def test_daily_rows_repeat_last_week_and_gaps_take_the_value_before():
    stamps = pd.date_range("2024-01-01", periods=21, freq="D")
    y = np.arange(21.0)
    kept = np.ones(21, dtype=bool)
    kept[16] = False  # a missing day: the row a week later takes the day before it
    holdout = pd.date_range("2024-01-22", periods=7, freq="D")
    naive = naive_predictions("regression", stamps[kept], y[kept], holdout)
    assert naive.kind == "seasonal naive (a week back)"
    assert naive.y_pred.tolist() == [14.0, 15.0, 15.0, 17.0, 18.0, 19.0, 20.0]


def test_rows_sharing_a_time_count_as_their_mean():
    stamps = pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-02"])
    holdout = pd.to_datetime(["2024-01-03", "2024-01-04"])
    assert last_value(stamps, [1.0, 2.0, 4.0], holdout).tolist() == [3.0, 3.0]
    # a season reaching before the history's first row falls back to the last value
    assert seasonal_naive(stamps, [1.0, 2.0, 4.0], holdout, timedelta(days=7)).tolist() == [3.0, 3.0]


def test_a_history_shorter_than_its_season_uses_the_last_value():
    stamps = pd.date_range("2024-01-01", periods=10, freq="h")
    naive = naive_predictions("regression", stamps, np.arange(10.0), pd.date_range("2024-01-01 10:00", periods=3,
                                                                                    freq="h"))
    assert naive.kind == "last value" and naive.y_pred.tolist() == [9.0, 9.0, 9.0]


def test_the_prior_predicts_the_base_rate_and_scores_as_a_coin_on_roc_auc():
    history = np.array([0] * 76 + [1] * 24)
    labels, proba = prior(history, 5)
    assert labels.tolist() == [0] * 5 and np.allclose(proba, [[0.76, 0.24]] * 5)
    stamps = pd.date_range("2024-01-01", periods=100, freq="h")
    naive = naive_predictions("classification", stamps, history, stamps[-10:] + pd.Timedelta(days=5))
    truth = np.array([0, 1] * 5)
    out = score("classification", truth, naive.y_pred, naive.proba)
    assert naive.kind == "prior" and out["roc_auc"] == pytest.approx(0.5) and out["accuracy"] == 0.5
    # text labels: sorted classes, as a scikit-learn classifier's columns are
    assert prior(["yes", "no", "no"], 1)[0].tolist() == ["no"]


def test_an_empty_history_is_refused():
    with pytest.raises(ValueError, match="at least one history row"):
        naive_predictions("regression", [], [], pd.to_datetime(["2024-01-01"]))
