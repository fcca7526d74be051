"""Backtest: a replay decides as real controller cycles do, the cache changes nothing, bad input is clear."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from mlflow_retrain.usecases.backtest import default_policies, run_backtest, select, write_outputs
from mlflow_retrain.usecases.replay import Replay
from mlflow_retrain.cli import cli
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.adapters.data import LabelledData
import mlflow.sklearn

EVERY = timedelta(days=14)
# v1 serves from 2011-04-30; at a threshold of 55 the weekly MAE crosses it at some steps and not at
# others, the cooldown suppresses one, and some candidates beat Production while others do not.
TRIGGERS = {"metric_threshold": {"max": 55}, "cooldown": "15d"}


# candidates' mae over the seasonal-naive baseline's on their holdouts ranges 0.38..0.91 here: at 0.6
# the naive gate (`validation.max_ratio_to_naive`) rejects some candidates that the relative gate passes
NAIVE_GATE = (TRIGGERS, {"max_ratio_to_naive": 0.6})
# max_age after a rejected candidate waits one max age after it: every candidate fails the absolute
# gate, and no cooldown hides the wait
AFTER_REJECTION = ({"metric_threshold": {"max": 1000}, "max_age": "30d"}, {"max_metric": 10})


@pytest.mark.parametrize("triggers, validation", [(TRIGGERS, {}), NAIVE_GATE, AFTER_REJECTION],
                         ids=["threshold", "naive-gate", "max_age"])
def test_replay_makes_the_same_decisions_as_real_controller_cycles(prod_store, write_policy, tmp_path, triggers,
                                                                   validation):
    config = load_config(write_policy(triggers=triggers, validation=validation))
    data = LabelledData.load(config)
    result = run_backtest(config, start="2011-04-30", end="2011-09-17", every=EVERY, data=data,
                          policies=select(default_policies(config, EVERY), ["configured"]))
    state = result.states[0]  # and the schedule of its budget, added by the backtest
    assert [(s.policy.family, s.policy.equal_budget) for s in result.states[1:]] == [("schedule", True)]
    real, reasons, binding = [], [], 0
    for as_of in result.steps[1:-1]:  # the bootstrap is the store's v1, trained as of 2011-04-30
        report = run_cycle(config, as_of=as_of.isoformat(), via="inprocess", data=data)
        reasons += [r.reason for r in report.decision.results if r.kind == "max_age"]
        if report.outcome in ("promoted", "rejected"):
            real.append((report.as_of, report.outcome))
            naive = [r for r in report.promotion.reasons if r.startswith("naive gate: ")]
            assert len(naive) == (1 if "max_ratio_to_naive" in validation else 0), report.promotion.reasons
            binding += bool(naive) and naive[0].endswith("(fail)")
    assert state.retrain_points == real
    naive_gate = "max_ratio_to_naive" in validation
    assert binding >= (1 if naive_gate else 0)  # the naive gate decided at least once
    if "max_age" in triggers:  # the path this case is for was taken
        assert any("was rejected: next due" in r for r in reasons), reasons
    assert state.retrains >= 2, real  # the comparison means something only if retrains happened
    # the model serving at the end is the same fit in both: same windows, same training code
    served = pd.Timestamp(max((t for t, outcome in real if outcome == "promoted"), default=result.steps[0]))
    rows = data.frame.tail(200)
    registry_model = mlflow.sklearn.load_model(f"models:/{config.model_name}/Production")
    replay = Replay(config, data)
    np.testing.assert_array_equal(registry_model.predict(data.features(rows)),
                                  replay.fit(served).model.predict(data.features(rows)))


def test_the_cache_returns_the_same_models_as_a_fresh_fit(store, write_policy):
    config = load_config(write_policy())
    data = LabelledData.load(config)
    cached, fresh = Replay(config, data), Replay(config, data, cache=False)
    at = pd.Timestamp("2011-06-30")
    first = cached.fit(at)
    assert cached.fit(at) is first and cached.fit_count == 1
    again = fresh.fit(at)
    assert fresh.fit(at) is not again and fresh.fit_count == 2
    rows = data.features(data.frame.tail(500))
    np.testing.assert_array_equal(first.model.predict(rows), again.model.predict(rows))
    # fits made ahead in two worker processes are the models fitted one by one
    parallel = Replay(config, data, jobs=2)
    try:
        parallel.fit_ahead([at, pd.Timestamp("2011-07-31")])
        assert set(parallel.ahead.pending) == {at, pd.Timestamp("2011-07-31")}
        np.testing.assert_array_equal(parallel.fit(at).model.predict(rows), first.model.predict(rows))
        assert at not in parallel.ahead.pending and parallel.fit_count == 1
    finally:
        parallel.close()


def test_policies_compared_in_one_pass_with_table_chart_and_run(store, write_policy, tmp_path):
    config = load_config(write_policy(triggers=TRIGGERS))
    policies = select(default_policies(config, EVERY, thresholds=[50, 70, 200]),
                      ["never", "threshold-50", "threshold-200", "every-window"])
    cached = run_backtest(config, start="2011-04-30", end="2011-09-17", every=EVERY, policies=policies)
    naive = run_backtest(config, start="2011-04-30", end="2011-09-17", every=EVERY, policies=policies, cache=False)
    def results(rows):  # everything but the time spent
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]

    assert results(cached.table()) == results(naive.table()) and cached.fits < naive.fits
    table = {r["policy"]: r for r in cached.table()}
    assert table["never"]["retrains"] == 0 and table["threshold-200"]["retrains"] == 0
    assert table["every-window"]["retrains"] == len(cached.steps) - 2
    assert table["never"]["mean_metric"] == table["threshold-200"]["mean_metric"]
    assert table["every-window"]["mean_metric"] < table["never"]["mean_metric"]
    assert cached.recommended in table
    write_outputs(config, cached, tmp_path / "bt")
    csv = pd.read_csv(tmp_path / "bt" / "backtest.csv")
    assert list(csv.policy) == ["never", "threshold-50", "threshold-200", "every-window"]
    html = (tmp_path / "bt" / "backtest.html").read_text()
    assert '<div id="tradeoff"' in html and '<div id="over-time"' in html and html.count("* plotly.js v") == 1
    run = MlflowClient().get_run(cached.run_id)
    assert run.data.tags["recommended"] == cached.recommended and run.data.metrics["never.retrains"] == 0


def test_the_p90_column_is_the_worse_tail_of_an_error_and_of_a_score():
    from mlflow_retrain.usecases.backtest import BacktestResult
    from mlflow_retrain.usecases.replay import Policy, PolicyState
    from mlflow_retrain.decide.choice import Rule

    series = [0.70, 0.80, 0.85, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.99, None]  # None: a gap
    values = [v for v in series if v is not None]
    steps = [pd.Timestamp("2011-05-01"), pd.Timestamp("2011-05-15")]

    def p90(metric: str, higher_is_better: bool) -> float:
        state = PolicyState(Policy("never", "never", None), steps[0], series=series)
        result = BacktestResult(steps, [state], "", Rule(higher_is_better=higher_is_better), None, metric, 0.0, 0)
        return result.table()[0]["p90_metric"]

    # 90% of windows were at least this good: the low tail of an accuracy, the high tail of an error
    score, error = p90("accuracy", True), p90("mae", False)
    assert score == pytest.approx(np.percentile(values, 10)) and score < np.mean(values)
    assert error == pytest.approx(np.percentile(values, 90)) and error > np.mean(values)


@pytest.mark.parametrize("args, message", [
    (["--from", "2011-09-01", "--to", "2011-06-01"], "must be after --from"),
    (["--from", "2014-01-01"], "outside the data"),
    (["--from", "2011-09-01", "--to", "2011-09-05", "--every", "14d"], "fewer than two steps"),
    (["--from", "2011-05-01", "--policy", "never,sometimes"], "unknown policy 'sometimes'"),
    (["--from", "2011-05-01", "--thresholds", "60,abc"], "--thresholds"),
])
def test_bad_spans_and_unknown_policies_are_clear_errors(store, write_policy, tmp_path, args, message):
    out = CliRunner().invoke(cli, ["backtest", "--config", str(write_policy()), "--out", str(tmp_path / "b"), *args])
    assert out.exit_code == 2 and message in out.output and "Traceback" not in out.output, out.output
    assert not (tmp_path / "b").exists()


def test_cli_backtest_json(store, write_policy, tmp_path):
    out = CliRunner().invoke(cli, ["backtest", "--config", str(write_policy(triggers=TRIGGERS)), "--from", "2011-04-30",
                                   "--to", "2011-07-23", "--every", "14d", "--policy", "never,configured",
                                   "--out", str(tmp_path / "b"), "--json"])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.output)
    assert [p["policy"] for p in payload["policies"]][:2] == ["never", "configured"] and payload["steps"] == 6
    # the schedule with the configured policy's retrain count is added: the equal-budget comparison
    assert [p["family"] for p in payload["policies"][2:] if p["equal_budget"]] in ([], ["schedule"])
    assert not [w for w in payload["warnings"] if "fires always" in w]  # the threshold of 55 fires at some steps only


def test_a_configured_trigger_that_fires_at_every_step_is_flagged(store, write_policy, tmp_path):
    """A limit below the model's floor fires at every step: the backtest says so and what to change."""
    out = CliRunner().invoke(cli, ["backtest", "--config", str(write_policy(triggers={"metric_threshold": {"max": 1}})),
                                   "--from", "2011-04-30", "--to", "2011-07-09", "--every", "14d", "--policy",
                                   "configured", "--out", str(tmp_path / "b")])
    assert out.exit_code == 0, out.output
    assert ("warning: trigger metric_threshold fired on 4 of 4 windows: it fires always; its limit is stricter than "
            "the model's own error (its floor)") in out.output
