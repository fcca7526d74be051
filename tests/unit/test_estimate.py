"""Label-free estimates (issue 14) on generated data with a known truth: DLE follows a regression
model's error into a region where it grows, CBPE a classifier's accuracy under covariate shift, and
neither is ever handed the labels of the rows it estimates."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from mlflow_retrain.measure.estimate import (
    ConfidenceEstimator,
    DirectLossEstimator,
    PerformanceEstimator,
)
from mlflow_retrain.measure.metrics import score

FEATURES = ["x1", "x2", "colour"]
SHIFTS = np.linspace(0.0, 1.2, 9)  # the windows' mean of x1: the regression's noise grows with x1 > 0


def regression_rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    """y is linear in the features, with noise whose scale grows where x1 > 0: a linear model is right
    on average everywhere, and its error is large only in the shifted region."""
    x1, x2 = rng.normal(shift, 1.0, n), rng.normal(0.0, 1.0, n)
    colour = rng.choice(["red", "green", "blue"], n)
    noise = rng.normal(0.0, 1.0, n) * (0.2 + 1.5 * np.maximum(x1, 0.0))
    y = 2 * x1 - x2 + np.where(colour == "red", 1.0, 0.0) + noise
    return pd.DataFrame({"x1": x1, "x2": x2, "colour": colour, "y": y})


def regression_model(rows: pd.DataFrame) -> Pipeline:
    encode = ColumnTransformer([("c", OneHotEncoder(handle_unknown="ignore"), ["colour"])], remainder="passthrough")
    return Pipeline([("encode", encode), ("model", LinearRegression())]).fit(rows[FEATURES], rows["y"])



@pytest.fixture(scope="module")
def regression():
    """A model, its reference (holdout) rows and windows shifted along x1, with the true metrics."""
    rng = np.random.default_rng(14)
    model = regression_model(regression_rows(rng, 3000))
    holdout = regression_rows(rng, 3000)
    windows = [regression_rows(rng, 1000, shift) for shift in SHIFTS]
    return model, holdout, windows


def dle_against_truth(regression, metric: str) -> tuple[np.ndarray, np.ndarray]:
    model, holdout, windows = regression
    estimator = PerformanceEstimator.fit(holdout[FEATURES], model.predict(holdout[FEATURES]), holdout["y"].to_numpy(),
                                         metric=metric, task="regression")
    estimates = [estimator.estimate(w[FEATURES], model.predict(w[FEATURES])) for w in windows]
    truths = [score("regression", w["y"].to_numpy(), model.predict(w[FEATURES]))[metric] for w in windows]
    return np.array(estimates), np.array(truths)


@pytest.mark.parametrize("metric", ["mae", "rmse"])
def test_dle_follows_the_error_into_the_shifted_region(regression, metric):
    estimates, truths = dle_against_truth(regression, metric)
    assert truths[-1] > 2 * truths[0]  # the shift does make the model worse
    assert np.corrcoef(estimates, truths)[0, 1] > 0.9
    assert np.mean(np.abs(estimates - truths)) < 0.1 * np.mean(truths)


def test_dle_is_prepared_on_holdout_rows_not_training_rows(regression):
    """The point of the reference being the holdout: on its own training rows a flexible model looks
    nearly perfect, so an estimator prepared there would say it still is."""
    from sklearn.ensemble import RandomForestRegressor

    _, holdout, windows = regression
    rng = np.random.default_rng(1)
    train = regression_rows(rng, 3000)
    encode = ColumnTransformer([("c", OneHotEncoder(), ["colour"])], remainder="passthrough")
    forest = Pipeline([("encode", encode), ("model", RandomForestRegressor(50, random_state=0, n_jobs=1))])
    forest.fit(train[FEATURES], train["y"])
    window = windows[-1]
    truth = score("regression", window["y"].to_numpy(), forest.predict(window[FEATURES]))["mae"]
    on = {name: PerformanceEstimator.fit(rows[FEATURES], forest.predict(rows[FEATURES]), rows["y"].to_numpy(),
                                         metric="mae", task="regression")
          for name, rows in (("train", train), ("holdout", holdout))}
    guess = {name: est.estimate(window[FEATURES], forest.predict(window[FEATURES])) for name, est in on.items()}
    assert abs(guess["holdout"] - truth) < 0.1 * truth < abs(guess["train"] - truth)


def test_dle_takes_unseen_and_missing_categories_and_an_empty_window(regression):
    model, holdout, windows = regression
    reference = holdout[FEATURES].assign(colour=holdout["colour"].where(holdout.index % 10 > 0))  # some missing
    estimator = PerformanceEstimator.fit(reference, model.predict(holdout[FEATURES]), holdout["y"].to_numpy(),
                                         metric="mae", task="regression")
    assert isinstance(estimator, DirectLossEstimator) and "colour" in estimator.categories
    window = windows[0][FEATURES]
    odd = window.assign(colour=np.where(window.index % 2 == 0, "purple", None))
    assert 0 < estimator.estimate(odd, model.predict(window)) < np.inf
    assert estimator.estimate(window.iloc[:0], np.array([])) is None


def classification_rows(rng: np.random.Generator, n: int, shift: float = 0.0, spread: float = 1.0) -> pd.DataFrame:
    """A logistic truth, so a logistic regression is calibrated; the shift moves x1, the strongest feature
    (accuracy follows), the spread widens or narrows both (roc_auc follows)."""
    x = rng.normal(0.0, spread, (n, 2)) + [shift, 0.0]
    p = 1 / (1 + np.exp(-(1.5 * x[:, 0] - x[:, 1] + 0.5)))
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "y": (rng.random(n) < p).astype(int)})


@pytest.fixture(scope="module")
def classification():
    rng = np.random.default_rng(41)
    train, holdout = classification_rows(rng, 4000), classification_rows(rng, 4000)
    model = LogisticRegression().fit(train[["x1", "x2"]], train["y"])
    windows = [classification_rows(rng, 3000, shift, spread) for shift, spread in
               ((-1.5, 1.0), (-1.0, 1.3), (-0.3, 0.6), (0.0, 1.0), (0.5, 0.5), (1.0, 1.5), (1.5, 0.8))]
    return model, holdout, windows


def overconfident(proba: np.ndarray) -> np.ndarray:
    """The same ranking and decisions, probabilities pushed towards 0 and 1: a miscalibrated model."""
    logit = np.log(proba[:, 1] / proba[:, 0])
    sharp = 1 / (1 + np.exp(-3 * logit))
    return np.column_stack([1 - sharp, sharp])


def cbpe_against_truth(classification, metric: str, distort=lambda p: p):
    model, holdout, windows = classification
    cols = ["x1", "x2"]
    estimator = PerformanceEstimator.fit(holdout[cols], model.predict(holdout[cols]), holdout["y"].to_numpy(),
                                         metric=metric, task="classification",
                                         probabilities=distort(model.predict_proba(holdout[cols])))
    estimates, truths = [], []
    for window in windows:
        proba = distort(model.predict_proba(window[cols]))
        estimates.append(estimator.estimate(window[cols], model.predict(window[cols]), proba))
        truths.append(score("classification", window["y"].to_numpy(), model.predict(window[cols]), proba)[metric])
    return estimator, np.array(estimates), np.array(truths)


@pytest.mark.parametrize("metric, points", [("accuracy", 0.03), ("f1", 0.05), ("roc_auc", 0.06)])
def test_cbpe_estimates_a_calibrated_classifier_under_covariate_shift(classification, metric, points):
    """Within a few points on every window. f1 and roc_auc are looser: noisier where positives are few, and
    roc_auc loses resolution where the isotonic steps are coarse (tails of the reference, narrow windows)."""
    _, estimates, truths = cbpe_against_truth(classification, metric)
    assert np.ptp(truths) > 0.1  # the shift does move the metric
    assert np.max(np.abs(estimates - truths)) < points


def test_cbpe_calibrates_an_overconfident_classifier(classification):
    estimator, estimates, truths = cbpe_against_truth(classification, "accuracy", overconfident)
    assert isinstance(estimator, ConfidenceEstimator) and estimator.calibrator is not None
    assert np.max(np.abs(estimates - truths)) < 0.03
    model, _, windows = classification
    raw = [np.mean(np.max(overconfident(model.predict_proba(w[["x1", "x2"]])), axis=1)) for w in windows]
    assert np.max(np.abs(np.array(raw) - truths)) > 0.05  # what the uncalibrated confidence would have said


def test_cbpe_text_labels_and_macro_f1(classification):
    model, holdout, windows = classification
    cols, names = ["x1", "x2"], np.array(["no", "yes"])
    estimator = PerformanceEstimator.fit(holdout[cols], names[model.predict(holdout[cols])],
                                         names[holdout["y"].to_numpy()], metric="f1", task="classification",
                                         probabilities=model.predict_proba(holdout[cols]))
    window = windows[3]
    truth = score("classification", names[window["y"].to_numpy()], names[model.predict(window[cols])])["f1"]
    guess = estimator.estimate(window[cols], names[model.predict(window[cols])], model.predict_proba(window[cols]))
    assert guess == pytest.approx(truth, abs=0.03)


def test_the_estimate_is_never_given_labels(regression):
    """Not by name (no parameter takes them) and not by accident (a window without its target column)."""
    for cls in (PerformanceEstimator, DirectLossEstimator, ConfidenceEstimator):
        assert list(inspect.signature(cls.estimate).parameters) == ["self", "features", "predictions", "probabilities"]
    model, holdout, windows = regression
    estimator = PerformanceEstimator.fit(holdout[FEATURES], model.predict(holdout[FEATURES]), holdout["y"].to_numpy(),
                                         metric="mae", task="regression")
    unlabelled = windows[4].drop(columns="y")
    shuffled = windows[4].assign(y=np.random.default_rng(0).permutation(windows[4]["y"]))
    assert estimator.estimate(unlabelled[FEATURES], model.predict(unlabelled[FEATURES])) == \
        estimator.estimate(shuffled[FEATURES], model.predict(shuffled[FEATURES]))


@pytest.mark.parametrize("task, metric, extra, message", [
    ("regression", "r2", {}, "no label-free estimate"),
    ("forecasting", "mae", {}, "unknown task"),
    ("classification", "accuracy", {}, "probabilities"),
    ("classification", "accuracy", {"probabilities": np.full((3, 3), 1 / 3)}, "binary"),
])
def test_what_cannot_be_estimated_is_a_clear_value_error(task, metric, extra, message):
    features = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match=message):
        PerformanceEstimator.fit(features, np.array([0, 1, 2]), np.array([0, 1, 2]), metric=metric, task=task,
                                 **extra)
