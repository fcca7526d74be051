"""One metric function for every comparison.

Why it is built this way: docs/design.md#measure-metrics.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from sklearn import metrics as skm

from mlflow_retrain.measure.names import CLASSIFICATION_METRICS, REGRESSION_METRICS

# The share of windows in the tail a summary reports: the level 90% of windows do at least as well as.
TAIL_SHARE = 0.10


def score(task: str, y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None = None) -> dict[str, float]:
    """Every metric of the task that is defined on these rows; the undefined ones are absent."""
    if len(y_true) == 0:
        return {}
    out = _regression(y_true, y_pred) if task == "regression" else _classification(y_true, y_pred, proba)
    return {name: value for name, value in out.items() if math.isfinite(value)}


def _regression(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    truth = np.asarray(y_true, dtype=float)
    err = np.asarray(y_pred, dtype=float) - truth
    out = {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2)))}
    # r2 compares the error with the target's variance: none on one row or a constant target
    # (scikit-learn would answer 0 or 1 there, a number that measures nothing)
    if len(truth) > 1 and np.ptp(truth) > 0:
        out["r2"] = float(skm.r2_score(truth, y_pred))
    return out


def _classification(y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None) -> dict[str, float]:
    labels = np.unique(np.concatenate([np.asarray(y_true), np.asarray(y_pred)]))
    # binary f1 is the f1 of class 1, so only 0/1 labels have it; any other labelling (text, three
    # classes among truth and predictions) is averaged over its classes, which never needs a positive
    binary = len(labels) <= 2 and set(labels.tolist()) <= {0, 1}
    out = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "f1": float(skm.f1_score(y_true, y_pred, average="binary" if binary else "macro", zero_division=np.nan)),
    }
    if proba is not None and proba.ndim == 2 and proba.shape[1] == 2 and len(np.unique(y_true)) == 2:
        out["roc_auc"] = float(skm.roc_auc_score(y_true, proba[:, 1]))
    return out


def worse_tail(values: Iterable[float | None], *, higher_is_better: bool) -> float:
    """The level the worst `TAIL_SHARE` of windows fall to: the 90th percentile of an error, the
    10th of a score (accuracy, roc_auc, r2), so "p90" always reads "90% of windows were at least
    this good". Gaps (None, NaN) are not values; none left is NaN."""
    kept = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not len(kept):
        return math.nan
    return float(np.percentile(kept, 100 * (TAIL_SHARE if higher_is_better else 1 - TAIL_SHARE)))


def per_row_loss(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """The per-row quantity whose mean is (a monotone function of) the metric; lower is better.

    The paired bootstrap in the validation gate resamples these rows, so both models must be
    judged row by row on the same rows. For f1 and roc_auc no such loss exists, which is why the
    policy file refuses `validation.significance` with them (policy.parse.PAIRED_METRICS).
    """
    if metric in REGRESSION_METRICS:
        err = np.asarray(y_pred, dtype=float) - np.asarray(y_true, dtype=float)
        return np.abs(err) if metric == "mae" else err**2
    if metric in CLASSIFICATION_METRICS:
        return (np.asarray(y_pred) != np.asarray(y_true)).astype(float)
    raise ValueError(f"unknown metric {metric!r}")
