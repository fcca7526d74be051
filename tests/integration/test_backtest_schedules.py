"""Schedules in the backtest on data that is not the bike data: named by the user, each on its own
cadence whatever the gate decides, and the configured policy always meets a schedule of its budget."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from mlflow_retrain.usecases.backtest import default_policies, run_backtest, select
from mlflow_retrain.cli import cli
from mlflow_retrain.policy.load import load_config

DAY = timedelta(days=1)


def daily_sales(days: int = 200, seed: int = 0) -> pd.DataFrame:
    """A daily series whose level drifts upward: a model goes stale at the pace of the drift."""
    rng = np.random.default_rng(seed)
    t = pd.date_range("2021-01-01", periods=days, freq="D")
    price = rng.uniform(1, 3, days)
    promo = rng.integers(0, 2, days)
    level = np.linspace(0, 40, days)
    sales = 100 + level - 12 * price + 9 * promo + rng.normal(0, 2, days)
    return pd.DataFrame({"day": t, "price": price, "promo": promo, "sales": sales})


def write(folder: Path, frame: pd.DataFrame, **overrides) -> Path:
    frame.to_csv(folder / "sales.csv", index=False)
    policy = {"model_name": "sales", "experiment": "sales", "task": "regression",
              "data": {"path": "sales.csv", "timestamp": "day", "target": "sales"},
              "training": {"estimator": "sklearn.linear_model.Ridge", "window": "30d", "holdout": "5d"},
              "monitoring": {"window": "1d", "metric": "mae"},
              "triggers": {"metric_threshold": {"max": 6.0}, "cooldown": "3d"},
              "validation": {"max_metric": 50}, **overrides}
    (folder / "retrain.yaml").write_text(yaml.safe_dump(policy))
    return folder / "retrain.yaml"


def test_a_schedule_keeps_its_cadence_after_a_rejection(store, tmp_path):
    # every candidate fails the absolute gate: a schedule must still wait for its next due time
    config = load_config(write(tmp_path, daily_sales(), validation={"max_metric": 0.01}))
    policies = select(default_policies(config, DAY, schedules=[timedelta(days=10), timedelta(days=25)]),
                      ["every-10d", "every-25d"])
    result = run_backtest(config, start="2021-02-15", end="2021-05-01", every=DAY, policies=policies)
    states = {s.policy.name: s for s in result.states}
    ten = [pd.Timestamp(t) for t, _ in states["every-10d"].retrain_points]
    assert ten == [pd.Timestamp("2021-02-15") + timedelta(days=10 * k) for k in range(1, 8)]
    assert all(d == "rejected" for _, d in states["every-10d"].retrain_points)
    assert states["every-25d"].retrains == 2  # decision points are days 1..74 (day 75 only ends a window)
    # each rejection is counted by the check it failed, and the binding gate is said, with a limit
    assert states["every-10d"].rejected_by["absolute"] == 7 and len(states["every-10d"].candidate_metrics) == 7
    rows = {r["policy"]: r for r in result.table()}
    assert rows["every-25d"]["rejected_by"]["absolute"] == 2
    (note,) = result.warnings()
    supported = np.percentile(states["every-10d"].candidate_metrics, 90)
    assert note.startswith("the absolute gate binds: it rejected 7 of 7 candidates of every-10d "
                           "(validation.max_metric 0.01)") and f"{supported:.4g} or better in 90%" in note


def test_the_configured_policy_meets_a_schedule_of_its_budget(store, tmp_path):
    config = load_config(write(tmp_path, daily_sales()))
    policies = select(default_policies(config, DAY), ["never", "configured", "every-window"])
    result = run_backtest(config, start="2021-02-15", end="2021-06-30", every=DAY, policies=policies)
    rows = {r["policy"]: r for r in result.table()}
    configured = rows["configured"]["retrains"]
    assert configured >= 2, rows
    (matched,) = [r for r in rows.values() if r["equal_budget"]]
    assert matched["family"] == "schedule" and abs(matched["retrains"] - configured) <= max(1, configured // 4)
    # the schedule curve now holds a point near the configured policy's budget: its gain is measured
    assert rows["configured"]["vs_schedule"] is not None and rows["configured"]["schedule_same_budget"] is not None


def test_cli_schedules_and_their_errors(store, tmp_path):
    policy = write(tmp_path, daily_sales(120))
    base = ["backtest", "--config", str(policy), "--from", "2021-02-15", "--every", "1d", "--out", str(tmp_path / "b")]
    out = CliRunner().invoke(cli, [*base, "--schedule", "7d,14d", "--policy", "never,every-7d,every-14d", "--json"])
    assert out.exit_code == 0, out.output
    rows = {p["policy"]: p for p in json.loads(out.output)["policies"]}
    assert set(rows) == {"never", "every-7d", "every-14d", "walk-forward"} and rows["every-7d"]["retrains"] == 10  # days 7..70 of 73 decision points
    # a schedule asked for is replayed and shown even when --policy leaves it out
    out = CliRunner().invoke(cli, [*base, "--schedule", "7d,14d", "--policy", "never,every-7d", "--folds", "0", "--json"])
    assert out.exit_code == 0, out.output
    assert [p["policy"] for p in json.loads(out.output)["policies"]] == ["never", "every-7d", "every-14d"]
    for bad, message in ((["--schedule", "12h"], "shorter than a step"), (["--schedule", "7d,soon"], "--schedule"),
                         (["--resolution", "-1"], "--resolution")):
        out = CliRunner().invoke(cli, [*base, *bad])
        assert out.exit_code == 2 and message in out.output and "Traceback" not in out.output, out.output


@pytest.mark.parametrize("every", ["1d"])
def test_human_table_says_what_vs_schedule_means(store, tmp_path, every):
    policy = write(tmp_path, daily_sales(120), validation={"max_metric": 2.0})  # below most candidates' error
    out = CliRunner().invoke(cli, ["backtest", "--config", str(policy), "--from", "2021-02-15", "--every", every,
                                   "--policy", "never,configured,every-window", "--out", str(tmp_path / "b"),
                                   "--search", "holdout", "--fit-budget", "6"])
    assert out.exit_code == 0, out.output
    assert "vs_schedule" in out.output and "same number of retrains" in out.output and "recommended:" in out.output
    assert "rejected_by" in out.output and "absolute " in out.output and "note: the absolute gate binds" in out.output
    # the search says what it tried within the budget: never alone is cheap enough (a fit each)
    assert "searched holdout: holdout 2d, holdout 1d, each with never: 2 fits (budget 6)" in out.output
    assert "never/holdout-2d  holdout 2d" in out.output


def test_walk_forward_and_budget_through_the_cli(store, tmp_path):
    policy = write(tmp_path, daily_sales(200))
    out = CliRunner().invoke(cli, ["backtest", "--config", str(policy), "--from", "2021-02-15", "--every", "1d",
                                   "--policy", "never,every-7d,configured,every-window", "--folds", "3",
                                   "--budget", "2/30d", "--out", str(tmp_path / "b"), "--json"])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.output)
    rows = {p["policy"]: p for p in payload["policies"]}
    forward = rows["walk-forward"]
    assert len(forward["folds"]) == 3 and forward["oos_mean_metric"] > 0 and forward["mean_metric"] is None
    start = payload["walk_forward"]["from"]
    assert all(f["chosen"] in rows for f in payload["walk_forward"]["folds"]) and start > "2021-02-15"
    # the recommendation keeps to the budget: at most 2 retrains per 30 days of the replay
    assert rows[payload["recommended"]]["retrains_per_30d"] <= 2 and rows["every-window"]["retrains_per_30d"] > 2
    assert all("oos_mean_metric" in r for r in rows.values())
    html = (tmp_path / "b" / "backtest.html").read_text()
    assert '<div id="walk-forward"' in html
    for bad, message in ((["--budget", "two/30d"], "--budget"), (["--folds", "-1"], "--folds"),
                         (["--folds", "500"], "--folds 500 needs")):
        out = CliRunner().invoke(cli, ["backtest", "--config", str(policy), "--from", "2021-02-15", "--every", "1d",
                                       "--out", str(tmp_path / "c"), *bad])
        assert out.exit_code == 2 and message in out.output and "Traceback" not in out.output, out.output
