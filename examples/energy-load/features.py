"""The model's feature engineering, kept with the model: calendar features from the timestamp.

Used both ways the example shows: as the built-in trainer's factory (`training.estimator:
features:make_pipeline`) and by this folder's own `train.py` (`training.project`).
"""

from __future__ import annotations

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

LABELS = ["day_type", "weather"]


def calendar(frame: pd.DataFrame) -> pd.DataFrame:
    """Hour of day and day of week, derived from the timestamp (which the model then drops)."""
    stamps = pd.to_datetime(frame["timestamp"])
    return frame.drop(columns="timestamp").assign(hour=stamps.dt.hour, day_of_week=stamps.dt.dayofweek)


def make_pipeline(max_iter: int = 100) -> Pipeline:
    """Calendar features, one-hot labels, gradient boosting: one object to fit, log and serve."""
    labels = ColumnTransformer([("labels", OneHotEncoder(handle_unknown="ignore", sparse_output=False), LABELS)],
                               remainder="passthrough")
    return Pipeline([("calendar", FunctionTransformer(calendar)), ("labels", labels),
                     ("model", HistGradientBoostingRegressor(max_iter=max_iter, random_state=0))])
