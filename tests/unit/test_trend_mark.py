"""Item 8a: the monitor's "trigger fired" marks include the trend trigger. It had no `mark` (the base
class says False) and the monitor gave each trigger one window, with no history to see a trend in."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd

from mlflow_retrain.policy.parse import parse_config
from mlflow_retrain.adapters.data import Window
from mlflow_retrain.decide import Observations, WindowScore
from mlflow_retrain.decide.triggers.trend import MetricTrend
from mlflow_retrain.usecases.monitor import marks

T0 = datetime(2024, 3, 1)


def scores(*metrics: float | None) -> tuple[WindowScore, ...]:
    return tuple(WindowScore(f"w{i}", 24, m) for i, m in enumerate(metrics))


def seen(*metrics: float | None) -> Observations:
    return Observations(metric="mae", higher_is_better=False, as_of=pd.Timestamp(T0), scores=scores(*metrics))


FLAT = (10, 10.2, 9.9, 10.1, 10, 9.8, 10.1, 10)  # a quiet history (a noise floor has something to measure)


def test_trend_mark_is_its_verdict_over_the_windows_given():
    trend = MetricTrend(windows=3, max_relative_increase=0.5)
    assert trend.mark(seen(*FLAT, 30)) and trend.check(seen(*FLAT, 30)).fired
    assert not trend.mark(seen(*FLAT, 10.3))
    assert not trend.mark(seen(30))  # one window is no trend


def test_the_monitor_passes_the_history_a_trend_reads():
    config = parse_config({"model_name": "m", "data": {"path": "d.csv", "timestamp": "t", "target": "y"},
                           "triggers": {"metric_threshold": {"max": 15},
                                        "metric_trend": {"windows": 3, "max_relative_increase": 0.5}}})
    window = Window(pd.Timestamp(T0), pd.Timestamp(T0 + timedelta(days=1)))
    assert marks(config, window, list(scores(*FLAT, 30)), None) == ["metric_threshold", "metric_trend"]
    assert marks(config, window, list(scores(*FLAT, 10.3)), None) == []
