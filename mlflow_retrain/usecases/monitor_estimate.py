"""The label-free estimate beside the realised metric, per monitored window (issue 25, item 6).

`estimated_metric` retrains on the newest rows' metric estimated without their labels; where the
estimate and the metric measured once the labels came part, the trigger is blind, and the monitor's
table, JSON and chart show both so a user sees it.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, Sequence

import pandas as pd

from mlflow_retrain.adapters.data import LabelledData, Window
from mlflow_retrain.adapters.registry import VersionInfo
from mlflow_retrain.base import tags as T
from mlflow_retrain.loop.evaluate import estimate_rows, label_free
from mlflow_retrain.measure.estimate import PerformanceEstimator
from mlflow_retrain.policy.config import Config
from mlflow_retrain.usecases.charts import WindowPoint

log = logging.getLogger(__name__)


class Models(Protocol):
    def get(self, version: str) -> Any: ...


def estimate_windows(config: Config, data: LabelledData, points: Sequence[WindowPoint], models: Models,
                     versions: Sequence[VersionInfo]) -> None:
    """Set each scored window's `estimate`: its metric estimated by the serving version's estimator,
    prepared on that version's holdout rows as a cycle prepares it. Only with `estimated_metric`."""
    if not config.triggers.needs("estimate"):
        return
    holdouts = {v.version: v.tags.get(T.HOLDOUT_WINDOW) for v in versions}
    prepared: dict[str, PerformanceEstimator | None] = {}
    for point in points:
        model = models.get(point.version) if point.version and point.rows and point.metric is not None else None
        if model is None:
            continue
        if point.version not in prepared:
            prepared[point.version] = _prepare(config, data, model, holdouts.get(point.version))
        if (estimator := prepared[point.version]) is not None:
            rows = data.cut(Window(pd.Timestamp(point.start), pd.Timestamp(point.end)))
            point.estimate = estimate_rows(estimator, data, model, rows)


def _prepare(config: Config, data: LabelledData, model: Any, holdout: str | None) -> PerformanceEstimator | None:
    """The version's estimator from its holdout rows; None for a version with none on record."""
    reference = data.rows(Window.parse(holdout)) if holdout else None
    if reference is None or not len(reference):
        log.info("no holdout rows on record: no label-free estimate for this version's windows")
        return None
    return label_free(config, data, model, reference)
