"""Refit after the gate (`training.refit_on_pass`): the version promoted is the validated candidate
fitted again through as_of, with the validated fit's gate as its evidence; the backtest replays it."""

from __future__ import annotations

import json
from datetime import timedelta

import mlflow.sklearn
import numpy as np
import pandas as pd

from mlflow_retrain.adapters.data import LabelledData, training_windows
from mlflow_retrain.adapters.registry import Registry
from mlflow_retrain.base import tags as T
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.usecases.backtest import default_policies, run_backtest, select
from mlflow_retrain.usecases.replay import Refit, Replay

REFIT = {"params": {"max_iter": 30}, "window": "60d", "holdout": "7d", "refit_on_pass": True}
TRIGGERS = {"metric_threshold": {"max": 50}, "cooldown": "15d"}  # two promotions: the second replaces a refit


def test_a_candidate_that_passes_is_refitted_through_as_of_and_the_refit_serves(prod_store, write_policy):
    config = load_config(write_policy(training=REFIT, triggers={"metric_threshold": {"max": 60}}))
    data = LabelledData.load(config)
    report = run_cycle(config, as_of="2011-05-31", via="inprocess", data=data)
    assert report.outcome == T.PROMOTED, report.reason
    registry = Registry(config)
    validated, refit = registry.get("2"), registry.get("3")
    assert (validated.stage, refit.stage, report.candidate_version) == ("Archived", "Production", "3")
    # the validated fit: archived as refitted, with the gate's reason and the refit's number
    gate = report.promotion.reason
    assert validated.tags[T.DECISION] == T.REFITTED
    assert validated.tags[T.DECISION_REASON].startswith(gate) and validated.tags[T.DECISION_REASON].endswith("as v3")
    # the refit: the gate's verdict and table, its validated run, and the rows it saw (holdout included)
    assert refit.tags[T.DECISION] == T.PROMOTED and refit.tags[T.DECISION_REASON] == gate
    assert refit.tags[T.BASELINE_VERSION] == "1" and refit.tags[T.REFIT_OF] == validated.run_id
    assert json.loads(refit.tags[T.EVIDENCE])["candidate"] == report.promotion.candidate
    through = refit.tags[T.HOLDOUT_WINDOW].split("..")[1]
    assert refit.tags[T.TRAIN_WINDOW] == f"{validated.tags[T.TRAIN_WINDOW].split('..')[0]}..{through}"
    start, end = (pd.Timestamp(t) for t in refit.tags[T.TRAIN_WINDOW].split(".."))
    assert refit.tags[T.REFIT_ROWS] == f"{refit.tags[T.TRAIN_WINDOW]} ({data.count_after(start, end)} rows)"
    assert (refit.tags[T.TRIGGER], refit.tags[T.AS_OF]) == (validated.tags[T.TRIGGER], validated.tags[T.AS_OF])
    assert "Refit" in registry.client.get_model_version(config.model_name, "3").description
    # what serves is the backtest's refit of that as_of, not the validated fit
    rows = data.frame.tail(200)
    served = mlflow.sklearn.load_model(f"models:/{config.model_name}/Production").predict(data.features(rows))
    replay = Replay(config, data)
    at = pd.Timestamp(validated.tags[T.AS_OF])
    np.testing.assert_array_equal(served, replay.fit(Refit(at)).model.predict(data.features(rows)))
    assert not np.array_equal(served, replay.fit(at).model.predict(data.features(rows)))


def test_replay_refits_exactly_as_real_cycles_do(prod_store, write_policy):
    config = load_config(write_policy(training=REFIT, triggers=TRIGGERS))
    data = LabelledData.load(config)
    result = run_backtest(config, start="2011-04-30", end="2011-09-17", every=timedelta(days=14), data=data,
                          policies=select(default_policies(config, timedelta(days=14)), ["configured"]))
    state = result.states[0]
    real = []
    for as_of in result.steps[1:-1]:
        report = run_cycle(config, as_of=as_of.isoformat(), via="inprocess", data=data)
        if report.outcome in (T.PROMOTED, T.REJECTED):
            real.append((report.as_of, report.outcome))
    assert state.retrain_points == real
    assert [o for _, o in real].count(T.PROMOTED) >= 2, real  # refits served, and were replaced by refits
    assert isinstance(state.production, Refit)
    rows = data.frame.tail(200)
    served = mlflow.sklearn.load_model(f"models:/{config.model_name}/Production").predict(data.features(rows))
    np.testing.assert_array_equal(served, Replay(config, data).fit(state.production).model.predict(data.features(rows)))


CAPPED = '''
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OrdinalEncoder


class Capped(HistGradientBoostingRegressor):
    """Fits the validated candidate's rows, refuses the refit's (more rows)."""

    def fit(self, X, y, **kwargs):
        if len(X) > {limit}:
            raise ValueError("more rows than this estimator takes")
        return super().fit(X, y, **kwargs)


def make():
    text = make_column_selector(dtype_include=object)
    return make_pipeline(make_column_transformer((OrdinalEncoder(), text), remainder="passthrough"), Capped(max_iter=30))
'''


def test_a_refit_that_fails_leaves_the_validated_fit_promoted_by_its_gate(prod_store, write_policy, tmp_path):
    config = load_config(write_policy(training={**REFIT, "estimator": "capped:make", "params": {}},
                                      triggers={"metric_threshold": {"max": 60}}))
    data = LabelledData.load(config)
    window = training_windows(pd.Timestamp("2011-05-31"), config.training.window, config.training.holdout)[0]
    (tmp_path / "capped.py").write_text(CAPPED.format(limit=data.count_after(window.start, window.end)))
    report = run_cycle(config, as_of="2011-05-31", via="inprocess", data=data)
    assert report.outcome == T.PROMOTED and report.candidate_version == "2", report.reason
    versions = {v.version: v for v in Registry(config).versions()}
    assert versions["2"].stage == "Production" and T.REFIT_OF not in versions["2"].tags
    assert "the refit failed (" in versions["2"].tags[T.DECISION_REASON] and set(versions) == {"1", "2"}


def test_with_sign_off_the_refit_is_what_waits_for_a_person(prod_store, write_policy):
    config = load_config(write_policy(training=REFIT, triggers={"metric_threshold": {"max": 60}},
                                      validation={"require_approval": True, "approval_ttl": "7d"}))
    report = run_cycle(config, as_of="2011-05-31", via="inprocess")
    assert (report.outcome, report.candidate_version) == (T.AWAITING_APPROVAL, "3"), report.reason
    registry = Registry(config)
    validated, refit = registry.get("2"), registry.get("3")
    assert (validated.stage, validated.tags[T.DECISION]) == ("Archived", T.REFITTED)
    assert (refit.stage, refit.tags[T.DECISION], refit.tags[T.REFIT_OF]) == ("Staging", T.AWAITING_APPROVAL,
                                                                          validated.run_id)
    assert registry.production().version == "1"  # nothing serves before a person approves the refit
