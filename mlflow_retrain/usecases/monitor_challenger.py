"""The challenger's error beside Production's, per monitored window (`validation.challenger`).

While a version is the challenger (from its `retrain.challenger.since` to the data time its rounds
decided), each window the monitor scores is scored by it too, on the same rows, so the table, JSON and
chart show what the rounds compare.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from mlflow_retrain.adapters.data import LabelledData, Window
from mlflow_retrain.adapters.registry import VersionInfo
from mlflow_retrain.base import tags as T
from mlflow_retrain.loop.evaluate import score_rows
from mlflow_retrain.policy.config import Config
from mlflow_retrain.usecases.charts import WindowPoint
from mlflow_retrain.usecases.monitor_estimate import Models


def challenged(versions: Sequence[VersionInfo]) -> list[tuple[pd.Timestamp, pd.Timestamp | None, str]]:
    """(since, until or None while it waits, version) of every version that was the challenger: until its
    rounds decided, or the next challenger's since (a new candidate replaced it; that archive is stamped
    in wall time)."""
    found = sorted((pd.Timestamp(since), v) for v in versions if (since := v.tags.get(T.CHALLENGER_SINCE)))
    spans = []
    for i, (since, v) in enumerate(found):
        ends = [_naive(stamp) for stamp in (v.tags.get(T.PROMOTED_AT), v.tags.get(T.ARCHIVED_AT)) if stamp]
        ends += [found[i + 1][0]] if i + 1 < len(found) else []
        spans.append((since, min(ends) if ends else None, v.version))
    return spans


def _naive(stamp: str) -> pd.Timestamp:
    at = pd.Timestamp(stamp)
    return at.tz_convert(None) if at.tzinfo is not None else at


def challenger_windows(config: Config, data: LabelledData, points: Sequence[WindowPoint], models: Models,
                       versions: Sequence[VersionInfo]) -> None:
    """Set `challenger` and `challenger_version` on each whole window inside a challenger's span."""
    spans = challenged(versions)
    for point in points:
        start, end = pd.Timestamp(point.start), pd.Timestamp(point.end)
        inside = [v for since, until, v in spans if since <= start and (until is None or end <= until)]
        model = models.get(inside[-1]) if inside and point.rows and point.metric is not None else None
        if model is not None:
            rows = data.cut(Window(start, end))
            point.challenger = score_rows(config, data, model, rows).metrics.get(config.metric)
            point.challenger_version = inside[-1]
