"""The model's metric on rows whose labels have not arrived yet, estimated without them (issue 14).

Why it is built this way: docs/design.md#measure-estimate.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import auc, roc_auc_score
from sklearn.model_selection import StratifiedShuffleSplit

from mlflow_retrain.measure.metrics import per_row_loss

ESTIMABLE = {"regression": ("mae", "rmse"), "classification": ("accuracy", "f1", "roc_auc")}
MAX_CATEGORIES = 255  # HistGradientBoosting's bins: a column with more categories is split on as codes
MISSING = "\x00missing"  # the category a missing value becomes (NannyML: 'NML_missing_value')
CATEGORICAL_DTYPES = ("object", "string", "category", "bool")


class PerformanceEstimator(ABC):
    """One model version's label-free estimate of one metric, prepared once on its reference rows."""

    metric: str

    @classmethod
    def fit(cls, features: pd.DataFrame, predictions: np.ndarray, labels: np.ndarray, *, metric: str, task: str,
            probabilities: np.ndarray | None = None, categorical: tuple[str, ...] = ()) -> PerformanceEstimator:
        """DLE for regression, CBPE for binary classification, from the reference rows (the model's
        holdout rows: features, the model's predictions and probabilities there, the labels).

        Raises ValueError for a metric neither method estimates (r2: no per-row loss; NannyML has none
        either), for more than two classes and for classification without probabilities.
        """
        check_estimable(task, metric)
        if task == "regression":
            return DirectLossEstimator.prepare(features, predictions, labels, metric, categorical)
        if probabilities is None:
            raise ValueError("a label-free classification estimate needs the model's probabilities")
        return ConfidenceEstimator.prepare(predictions, labels, probabilities, metric)

    @abstractmethod
    def estimate(self, features: pd.DataFrame, predictions: np.ndarray,
                 probabilities: np.ndarray | None = None) -> float | None:
        """The metric estimated on these rows, or None where it is undefined (no rows), as
        `metrics.score` leaves an undefined metric out rather than report a number."""


def check_estimable(task: str, metric: str) -> None:
    """Refuse, before any fitting, what has no label-free estimate, naming what has one."""
    if task not in ESTIMABLE:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(ESTIMABLE)}")
    if metric not in ESTIMABLE[task]:
        raise ValueError(f"metric {metric!r} has no label-free estimate for {task}; estimable: "
                         f"{', '.join(ESTIMABLE[task])}")


@dataclass(frozen=True)
class DirectLossEstimator(PerformanceEstimator):
    """DLE: a booster that predicts the model's per-row loss from the features and its prediction."""

    metric: str
    columns: tuple[str, ...]
    categories: dict[str, pd.Index]
    model: HistGradientBoostingRegressor

    @classmethod
    def prepare(cls, features: pd.DataFrame, predictions: np.ndarray, labels: np.ndarray, metric: str,
                categorical: tuple[str, ...] = ()) -> DirectLossEstimator:
        """Fit on the reference rows where both prediction and label are known (NannyML drops the rest)."""
        y_pred, y_true = np.asarray(predictions, dtype=float), np.asarray(labels, dtype=float)
        known = np.isfinite(y_pred) & np.isfinite(y_true)
        if not known.any():
            raise ValueError("no reference row has both a prediction and a label to learn the loss from")
        columns = tuple(features.columns)
        categories = {col: _categories(features[col]) for col in columns
                      if col in categorical or str(features[col].dtype) in CATEGORICAL_DTYPES}
        is_category = [col in categories and len(categories[col]) <= MAX_CATEGORIES for col in columns] + [False]
        model = HistGradientBoostingRegressor(learning_rate=0.1, max_iter=100, max_leaf_nodes=31,
                                              min_samples_leaf=20, max_bins=255, early_stopping=False,
                                              categorical_features=is_category)
        matrix = _design(features, y_pred, columns, categories)
        model.fit(matrix[known], per_row_loss(metric, y_true[known], y_pred[known]))
        return cls(metric, columns, categories, model)

    def estimate(self, features: pd.DataFrame, predictions: np.ndarray,
                 probabilities: np.ndarray | None = None) -> float | None:
        """The mean predicted loss, each clipped at 0; its square root for rmse."""
        if not len(features):
            return None
        losses = np.maximum(0.0, self.model.predict(_design(features, np.asarray(predictions, dtype=float),
                                                            self.columns, self.categories)))
        mean = float(np.mean(losses))
        return math.sqrt(mean) if self.metric == "rmse" else mean


def _categories(column: pd.Series) -> pd.Index:
    """The reference's values of a categorical column, missing included, in a fixed order."""
    return pd.Index(sorted(set(_with_missing(column)), key=str))


def _with_missing(column: pd.Series) -> pd.Series:
    return column.astype(object).where(column.notna(), MISSING)


def _design(features: pd.DataFrame, predictions: np.ndarray, columns: tuple[str, ...],
            categories: dict[str, pd.Index]) -> np.ndarray:
    """The booster's input: the features in the reference's order (categories as their reference codes,
    an unseen one NaN) and the model's prediction last."""
    parts = []
    for col in columns:
        if col in categories:
            codes = categories[col].get_indexer(_with_missing(features[col])).astype(float)
            parts.append(np.where(codes < 0, np.nan, codes))
        else:
            parts.append(pd.to_numeric(features[col], errors="coerce").to_numpy(dtype=float))
    return np.column_stack([*parts, predictions])


@dataclass(frozen=True)
class ConfidenceEstimator(PerformanceEstimator):
    """CBPE: each row is right with its (calibrated) probability of being so."""

    metric: str
    positive: object
    binary_labels: bool
    calibrator: IsotonicRegression | None

    @classmethod
    def prepare(cls, predictions: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                metric: str) -> ConfidenceEstimator:
        """The positive class is the second of the sorted labels (a probability array's second column)."""
        classes = sorted(set(np.asarray(labels).tolist()) | set(np.asarray(predictions).tolist()))
        binary_labels = set(classes) <= {0, 1}
        if len(classes) > 2 or (len(classes) < 2 and not binary_labels):
            raise ValueError(f"CBPE estimates binary classification; the reference holds classes {classes[:5]}")
        positive = 1 if binary_labels else classes[1]
        scores, truth = positive_scores(probabilities), (np.asarray(labels) == positive).astype(float)
        calibrator = _isotonic(scores, truth) if needs_calibration(truth, scores) else None
        return cls(metric, positive, binary_labels, calibrator)

    def estimate(self, features: pd.DataFrame, predictions: np.ndarray,
                 probabilities: np.ndarray | None = None) -> float | None:
        """NannyML's estimate of accuracy, f1 or roc_auc from the calibrated positive probability."""
        if probabilities is None:
            raise ValueError("CBPE estimates from the model's probabilities; none were given")
        scores = positive_scores(probabilities)
        if not len(scores):
            return None
        calibrated = self.calibrator.predict(scores) if self.calibrator is not None else scores
        said_positive = np.asarray(predictions) == self.positive
        if self.metric == "accuracy":
            value = float(np.mean(np.where(said_positive, calibrated, 1.0 - calibrated)))
        elif self.metric == "f1":
            value = expected_f1(said_positive, calibrated)
            if not self.binary_labels:  # metrics.score averages f1 over both classes there
                value = (value + expected_f1(~said_positive, 1.0 - calibrated)) / 2
        else:
            value = expected_roc_auc(calibrated, scores)
        return value if math.isfinite(value) else None


def positive_scores(probabilities: np.ndarray) -> np.ndarray:
    """The positive class's probability from a (n, 2) array (predict_proba's) or a 1-D one."""
    proba = np.asarray(probabilities, dtype=float)
    return proba[:, 1] if proba.ndim == 2 else proba


def expected_f1(said_positive: np.ndarray, p: np.ndarray) -> float:
    """F1 from expected counts: a predicted positive is a TP with probability p, else an FP; a predicted
    negative is an FN with probability p. NaN without any expected positive (metrics.py leaves f1 out)."""
    tp = float(np.sum(np.where(said_positive, p, 0.0)))
    fp = float(np.sum(np.where(said_positive, 1.0 - p, 0.0)))
    fn = float(np.sum(np.where(said_positive, 0.0, p)))
    denominator = tp + (fp + fn) / 2
    return tp / denominator if denominator > 0 else math.nan


def expected_roc_auc(calibrated: np.ndarray, scores: np.ndarray) -> float:
    """NannyML's `estimate_roc_auc`: rows ranked by the model's score, highest first, each adding p to
    the true positives and 1 - p to the false ones (counts rounded to 5 decimals, as there)."""
    order = np.argsort(scores)[::-1]
    tps = np.r_[0.0, np.cumsum(calibrated[order])]
    fps = np.r_[0.0, np.arange(1, len(order) + 1)] - tps
    tps, fps = np.round(tps, 5), np.round(fps, 5)
    if tps[-1] <= 0 or fps[-1] <= 0:
        return math.nan
    return float(auc(fps / fps[-1], tps / tps[-1]))


def _isotonic(scores: np.ndarray, truth: np.ndarray) -> IsotonicRegression:
    return IsotonicRegression(out_of_bounds="clip", increasing=True).fit(scores, truth)


def needs_calibration(truth: np.ndarray, scores: np.ndarray, bins: int = 10, splits: int = 10) -> bool:
    """NannyML's `calibration.needs_calibration`: whether isotonic calibration lowers the expected
    calibration error of held-out reference rows (pooled over `splits` stratified 90/10 splits)."""
    if len(np.unique(truth)) < 2 or roc_auc_score(truth, scores) > 0.999:
        return False
    folds = StratifiedShuffleSplit(n_splits=splits, test_size=0.1, random_state=42).split(scores, truth)
    held_truth, held_raw, held_calibrated = [], [], []
    for train, test in folds:
        held_truth.append(truth[test])
        held_raw.append(scores[test])
        held_calibrated.append(_isotonic(scores[train], truth[train]).predict(scores[test]))
    pooled = np.concatenate(held_truth)
    before = calibration_error(pooled, np.concatenate(held_raw), bins)
    return before > calibration_error(pooled, np.concatenate(held_calibrated), bins)


def calibration_error(truth: np.ndarray, p: np.ndarray, bins: int) -> float:
    """Expected calibration error over equal-count bins of the rows sorted by p, NannyML's binning:
    bins of n // bins rows, the last one taking the remainder (at least 2 bins; fewer than 4 rows raise)."""
    n = len(p)
    if n <= 2 * bins:
        bins = n // 2
        if bins < 2:
            raise ValueError(f"{n} held-out reference rows cannot be split into 2 calibration bins")
    edges = np.arange(0, n + 1, n // bins)
    edges[-1] = n
    order = np.argsort(p)
    p, truth = p[order], truth[order]
    return float(sum((right - left) / n * abs(p[left:right].mean() - truth[left:right].mean())
                     for left, right in itertools.pairwise(edges)))
