"""Evidently's reports on column types a user's table has and the bundled data lacks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlflow_retrain.policy.config import DataConfig
from mlflow_retrain.adapters.reports import PREDICTION, drift_report, quality_report


def test_a_true_false_feature_is_reported_not_crashed_on(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=400, freq="h"), "promo": rng.random(400) < 0.3,
                          "price": rng.normal(10, 1, 400), "y": rng.normal(5, 1, 400)})
    spec = DataConfig(path="x", timestamp="t", target="y", features=("promo", "price"), categorical=())
    later = frame.tail(200).assign(promo=True)  # every row on promotion: that column drifted
    numbers = drift_report(frame.head(200), later, spec, tmp_path / "drift.html")
    assert (numbers.total_columns, numbers.drifted_columns) == (2, 1), numbers  # promo, not price
    quality_report(later.assign(**{PREDICTION: later.y + rng.normal(0, 1, 200)}), spec, "regression", tmp_path / "quality.html")
    assert (tmp_path / "drift.html").stat().st_size > 10_000 and (tmp_path / "quality.html").stat().st_size > 10_000
