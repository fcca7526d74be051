"""One metric function: every metric defined on the rows, an undefined one absent (a gap), never raising;
summary statistics that take a tail take the metric's worse one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlflow_retrain.measure.metrics import score, worse_tail


def test_roc_auc_on_one_class_is_left_out_not_raised():
    y = np.zeros(6, dtype=int)
    proba = np.column_stack([np.linspace(0.9, 0.4, 6), np.linspace(0.1, 0.6, 6)])
    pred = (proba[:, 1] > 0.5).astype(int)
    out = score("classification", y, pred, proba)
    assert "roc_auc" not in out and out["accuracy"] == pytest.approx(np.mean(pred == y))
    both = score("classification", np.array([0, 1, 0, 1, 1, 0]), pred, proba)
    assert 0.0 <= both["roc_auc"] <= 1.0


def test_f1_without_a_positive_anywhere_is_undefined_not_zero():
    y = np.zeros(5, dtype=int)
    assert set(score("classification", y, y)) == {"accuracy"}


def test_labels_the_predictions_add_do_not_break_f1():
    out = score("classification", np.array([0, 0, 0]), np.array([0, 1, 2]))
    assert 0.0 <= out["f1"] <= 1.0  # three labels among truth and predictions: macro, not binary


def test_text_labels_score_without_a_positive_class():
    out = score("classification", np.array(["no", "yes", "yes"]), np.array(["no", "yes", "no"]))
    assert out["accuracy"] == pytest.approx(2 / 3) and 0.0 < out["f1"] < 1.0


@pytest.mark.parametrize("y_true", [np.array([3.0]), np.array([2.0, 2.0, 2.0])])
def test_r2_needs_two_rows_and_a_target_that_varies(y_true):
    out = score("regression", y_true, y_true + 1)
    assert "r2" not in out and out["mae"] == pytest.approx(1.0) and out["rmse"] == pytest.approx(1.0)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_no_rows_no_metrics(task):
    assert score(task, np.array([]), np.array([])) == {}


def test_the_worse_tail_follows_the_metric_direction():
    values = [float(v) for v in range(1, 11)]
    assert worse_tail(values, higher_is_better=False) == pytest.approx(np.percentile(values, 90))  # an error
    assert worse_tail(values, higher_is_better=True) == pytest.approx(np.percentile(values, 10))  # a score
    assert worse_tail([None, 2.0, float("nan")], higher_is_better=True) == 2.0  # gaps are not values
    assert math.isnan(worse_tail([None], higher_is_better=False))
