"""`init` calibrates on the user's data: a quick walk-forward of the estimator sets the trigger from the
model's window errors, the gate from its holdout errors and a naive baseline's, the training window from
what erred less; an imbalanced target gets roc_auc; columns that identify a row are left out, each said."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
import yaml

from growing import growing_demand, imbalanced_events
from mlflow_retrain.measure.metrics import worse_tail
from mlflow_retrain.policy.parse import parse_config
from mlflow_retrain.usecases.calibrate import fold_points
from mlflow_retrain.usecases.detect import choose_metric, row_identifiers
from mlflow_retrain.usecases.init import render, suggest

D = timedelta(days=1)


def calibrated(frame: pd.DataFrame, target: str, budget: float = 120.0):
    return suggest(frame, target=target, model_name="m", data_path="d.csv", budget=budget)


def test_growing_demand_gets_a_gate_relative_to_the_naive_baseline_and_numbers_from_its_folds():
    s = calibrated(growing_demand(days=120), "demand")
    c = s.calibration
    assert c is not None and c.fits == 2 * len(c.folds) and len(c.folds) == 4 and c.naive_kind.startswith("seasonal")
    errors = [e for fold in c.folds for e in fold.windows]
    assert s.threshold == float(f"{worse_tail(errors, higher_is_better=False):.3g}")  # the p90 of window errors
    ratios = [f.holdout / f.naive for f in c.folds]
    assert s.ratio_to_naive == max(1.0, math.ceil(110 * max(ratios)) / 100)
    everything = [f.holdout for f in c.folds] + [f.naive for f in c.folds]
    assert s.gate == float(f"{2 * max(everything):.3g}") and all(f.holdout < s.gate for f in c.folds)
    # the two training windows err alike (within 2%): all history
    assert s.training_window == timedelta(days=math.ceil((s.end - s.start) / D))
    assert s.reasons["training.window"].endswith("(a shorter window did not err 2% less)")
    config = parse_config(yaml.safe_load(render(s, "next")))
    assert config.validation.max_ratio_to_naive == s.ratio_to_naive and config.validation.max_metric == s.gate
    assert config.triggers.metric_threshold.max == s.threshold and config.data.exclude == ("rownames",)
    said = " ".join(line.strip().removeprefix("# ") for line in render(s, "next").splitlines())
    assert f"model / baseline: {', '.join(f'{r:.4g}' for r in ratios)}" in said
    assert f"over {len(errors)} monitoring windows" in said and "walk-forward over 4 fit point(s)" in said
    assert "'rownames' left out of the features" in s.warnings[0] and "(a counter)" in s.warnings[0]


def test_a_shorter_training_window_is_chosen_when_the_old_rows_mislead():
    stamps = pd.date_range("2024-01-01", periods=24 * 120, freq="h")
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, len(stamps))
    flipped = stamps >= "2024-02-18"  # 40% in, the relation flips: older rows teach the wrong sign
    y = 50 + np.where(flipped, -8, 8) * x + rng.normal(0, 1, len(stamps))
    s = calibrated(pd.DataFrame({"ts": stamps, "x": x, "y": y}), "y")
    assert s.training_window == 59 * D and s.reasons["training.window"].endswith("Chosen: 59d")
    short, everything = (float(part.split("mean mae ")[1].split(" ")[0])
                         for part in s.reasons["training.window"].split(": ", 1)[1].split("; ")[::-1])
    assert short < 0.98 * everything


def test_an_imbalanced_target_is_judged_on_roc_auc_with_a_floor_below_the_models_worst_fold():
    s = calibrated(imbalanced_events(days=60), "flagged")
    assert (s.task, s.metric) == ("classification", "roc_auc")
    holdouts = [f.holdout for f in s.calibration.folds]
    assert 0.5 < s.gate < min(holdouts) and s.gate == float(f"{min(holdouts) - 0.25 * (min(holdouts) - 0.5):.3g}")
    errors = [e for fold in s.calibration.folds for e in fold.windows]
    assert s.threshold == float(f"{worse_tail(errors, higher_is_better=True):.3g}") and s.ratio_to_naive is None
    # a window holds ~50 rows of the rare class: roc_auc on a handful of positives is noise
    assert "rows hold ~50 of the rarest class (23% of rows)" in s.reasons["monitoring.window"]
    config = parse_config(yaml.safe_load(render(s, "next")))
    assert config.validation.min_metric == s.gate and config.triggers.metric_threshold.min == s.threshold


def test_metrics_fit_the_task():
    assert choose_metric(pd.Series([0] * 76 + [1] * 24), "classification")[0] == "roc_auc"
    assert choose_metric(pd.Series(["no"] * 60 + ["yes"] * 40), "classification")[0] == "accuracy"
    assert choose_metric(pd.Series([0] * 50 + [1] * 20 + [2] * 30), "classification")[0] == "accuracy"
    assert choose_metric(pd.Series([1.5, 2.5]), "regression")[0] == "mae"


def test_columns_that_identify_a_row_are_found_and_features_are_not():
    n = 500
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "Unnamed: 0": np.arange(n), "order_id": [f"A{i:05d}" for i in rng.permutation(n)],
        "uuid": [str(uuid.UUID(int=int(i))) for i in rng.integers(0, 2**62, n)],
        "index": np.repeat(np.arange(n // 2), 2),  # monotone, named like an index, two rows a value
        "price": rng.normal(10, 2, n), "units": rng.integers(0, 20, n), "store": rng.choice(["a", "b"], n),
    })
    found = row_identifiers(frame, {"units"})
    assert found == {"Unnamed: 0": "one distinct value per row (a counter)",
                     "order_id": "one distinct value per row (an identifier)", "uuid": "holds UUIDs",
                     "index": "a monotone whole number named like a row index"}


def test_fold_points_serve_the_newest_rows_and_need_room_to_train():
    first, last = pd.Timestamp("2024-01-01"), pd.Timestamp("2024-11-26")  # 330 days: the newest 132 scored
    points = fold_points(first, last, 7 * D, 7 * D)
    assert len(points) == 4 and points[0] == last - pd.Timedelta(days=132) and points[1] - points[0] == pd.Timedelta(
        days=33)
    assert len(fold_points(first, first + pd.Timedelta(days=40), 7 * D, 7 * D)) == 2  # 16 days: two weeks
    assert fold_points(first, first + pd.Timedelta(days=10), 7 * D, 7 * D) == []


def test_a_model_far_better_than_the_naive_baseline_is_flagged_as_a_possible_leak():
    frame = growing_demand(days=120)
    s = calibrated(frame.assign(half=frame.demand / 2), "demand", budget=0)  # a part of the target, as a feature
    leak = next(w for w in s.warnings if "a feature may carry the target itself" in w)
    assert leak.startswith("sklearn.ensemble.HistGradientBoostingRegressor erred at most 0.0")
    assert not any("carry the target" in w for w in calibrated(frame, "demand", budget=0).warnings)


def test_a_budget_of_zero_fits_one_point():
    s = calibrated(growing_demand(days=120), "demand", budget=0)
    assert len(s.calibration.folds) == 1 and s.calibration.fits == 2
    assert "walk-forward over 1 fit point(s), 2 fits" in s.reasons["training.window"]


def test_a_baseline_that_repeats_the_holdout_exactly_gets_no_ratio_and_too_little_data_says_so():
    stamps = pd.date_range("2024-01-01", periods=30, freq="D")
    weekly = pd.DataFrame({"ts": stamps, "x": np.random.default_rng(0).normal(size=30), "y": np.arange(30.0) % 7})
    s = suggest(weekly, target="y", model_name="m", data_path="d.csv", task="regression")
    assert [f.naive for f in s.calibration.folds] == [0.0] * 4  # a week back repeats every holdout
    assert s.ratio_to_naive is None and s.gate == float(f"{2 * max(f.holdout for f in s.calibration.folds):.3g}")
    assert "the baseline repeated a holdout exactly, so no ratio to it" in s.reasons["validation"]
    short = suggest(weekly.head(3), target="y", model_name="m", data_path="d.csv", task="regression")
    assert short.calibration is None and short.reasons["validation"].startswith("too few rows for a walk-forward")
