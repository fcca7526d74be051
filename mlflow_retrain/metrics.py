"""One metric function for every comparison.

Production and a candidate are always scored by the same code on the same frame, so a difference
in numbers is a difference in models, never in how they were measured.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from mlflow_retrain.config import CLASSIFICATION_METRICS, REGRESSION_METRICS


def score(task: str, y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None = None) -> dict[str, float]:
    """All metrics of the task; roc_auc only where it is defined (binary, both classes present)."""
    if task == "regression":
        err = np.asarray(y_pred, dtype=float) - np.asarray(y_true, dtype=float)
        return {
            "mae": float(np.mean(np.abs(err))),
            "rmse": float(np.sqrt(np.mean(err**2))),
            "r2": float(skm.r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan"),
        }
    out = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "f1": float(skm.f1_score(y_true, y_pred, average="binary" if len(np.unique(y_true)) <= 2 else "macro",
                                 zero_division=0)),
    }
    if proba is not None and proba.ndim == 2 and proba.shape[1] == 2 and len(np.unique(y_true)) == 2:
        out["roc_auc"] = float(skm.roc_auc_score(y_true, proba[:, 1]))
    return out


def per_row_loss(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """The per-row quantity whose mean is (a monotone function of) the metric; lower is better.

    The paired bootstrap in the validation gate resamples these rows, so both models must be
    judged row by row on the same rows. For f1 and roc_auc no such loss exists, which is why the
    policy file refuses `validation.significance` with them (config.PAIRED_METRICS).
    """
    if metric in REGRESSION_METRICS:
        err = np.asarray(y_pred, dtype=float) - np.asarray(y_true, dtype=float)
        return np.abs(err) if metric == "mae" else err**2
    if metric in CLASSIFICATION_METRICS:
        return (np.asarray(y_pred) != np.asarray(y_true)).astype(float)
    raise ValueError(f"unknown metric {metric!r}")
