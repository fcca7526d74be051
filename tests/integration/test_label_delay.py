"""Late labels (`monitoring.label_delay`) on data that is not the bike data: a cycle scores, trains
and validates on the labels it has, drift reads the newest features, and the backtest replays the
same decisions and says what the delay costs."""

from __future__ import annotations

from datetime import timedelta

import inprocess_cli
import numpy as np
import pandas as pd
from load_policy import write_load_policy
from synthetic import energy_load

from mlflow_retrain.base import tags as T
from mlflow_retrain.usecases.backtest import default_policies, run_backtest, select
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.adapters.data import LabelledData
from mlflow_retrain.adapters.registry import Registry
from mlflow_retrain.usecases.monitor import run_monitor

WEEK = timedelta(days=7)
START, END = "2022-12-03", "2023-02-25"  # the shift (2023-01-01) in the middle


def policy(tmp_path, delay: str | None = "7d"):
    frame = energy_load("2022-09-01", "2023-03-10 23:00")
    monitoring = {"label_delay": delay} if delay else {}
    return load_config(write_load_policy(tmp_path, frame, monitoring=monitoring,
                                         triggers={"metric_threshold": {"max": 30}, "cooldown": "7d"}))


def test_a_cycle_sees_labels_only_up_to_as_of_minus_the_delay(store, tmp_path):
    config = policy(tmp_path)
    data = LabelledData.load(config)
    first = run_cycle(config, as_of=START, via="inprocess", data=data, bootstrap=True)
    assert first.outcome == T.PROMOTED
    v1 = Registry(config).get("1")
    assert pd.Timestamp(v1.tags[T.AS_OF]) == pd.Timestamp(START) - WEEK  # trained on the labels it had
    report = run_cycle(config, as_of="2023-01-21", via="inprocess", data=data, dry_run=True)
    # the metric's newest window ends a week before as_of; drift reads the week up to as_of
    assert report.monitoring[-1].window.endswith("2023-01-14T00:00:00")


def test_the_replay_decides_as_real_cycles_do_with_the_delay(store, tmp_path):
    config = policy(tmp_path)
    data = LabelledData.load(config)
    result = run_backtest(config, start=START, end=END, every=WEEK, data=data,
                          policies=select(default_policies(config, WEEK), ["configured"]))
    state = result.states[0]
    run_cycle(config, as_of=START, via="inprocess", data=data, bootstrap=True)
    real = []
    for as_of in result.steps[1:-1]:
        report = run_cycle(config, as_of=as_of.isoformat(), via="inprocess", data=data)
        if report.outcome in (T.PROMOTED, T.REJECTED):
            real.append((as_of.isoformat(), report.outcome))
    assert state.retrain_points == real and state.retrains >= 1, real
    # the model serving at the end was trained on the labels of a week before its cycle, in both
    served = Registry(config).production()
    assert pd.Timestamp(served.tags[T.AS_OF]) == pd.Timestamp(real[-1][0]) - WEEK


def test_the_backtest_reports_each_policy_with_and_without_the_delay(store, tmp_path):
    config = policy(tmp_path)
    result = run_backtest(config, start=START, end=END, every=WEEK,
                          policies=select(default_policies(config, WEEK), ["never", "configured", "every-window"]))
    rows = {r["policy"]: r for r in result.table()}
    assert result.to_dict()["label_delay"] == "7d"
    never, every = rows["never"], rows["every-window"]
    # never retrains, but its one model was also trained on labels a week older
    assert never["retrains"] == never["retrains_without_delay"] == 0
    assert never["mean_metric"] >= never["mean_metric_without_delay"]
    # retraining every week on labels a week old is worse than on fresh ones, after the shift
    assert every["mean_metric"] > every["mean_metric_without_delay"]


def test_rows_without_a_label_yet_are_features_only(store, tmp_path):
    """Real late labels: the newest week has no label yet. With label_delay the data loads, a cycle
    trains and scores on labelled rows and drift reads the unlabelled ones; without it, one line."""
    frame = energy_load("2022-09-01", "2023-01-21 23:00")
    stamps = pd.to_datetime(frame["timestamp"])
    frame.loc[stamps > pd.Timestamp("2023-01-14 23:00"), "load_mw"] = None  # a week of rows without labels
    path = write_load_policy(tmp_path, frame, monitoring={"label_delay": "7d"},
                             triggers={"data_drift": {"max_drift_share": 0.9}})
    config = load_config(path)
    data = LabelledData.load(config)
    assert data.last_labelled == pd.Timestamp("2023-01-14 23:00") and data.last == pd.Timestamp("2023-01-21 23:00")
    first = run_cycle(config, via="inprocess", data=data, bootstrap=True)  # as of the newest features
    assert first.outcome == T.PROMOTED
    assert pd.Timestamp(Registry(config).get("1").tags[T.AS_OF]) == pd.Timestamp("2023-01-14 23:00")
    report = run_cycle(config, via="inprocess", data=data, dry_run=True)
    assert report.drift is not None and report.monitoring[-1].rows > 0
    # older than the delay, an empty label is still refused, naming the key that would allow it
    frame.loc[stamps < pd.Timestamp("2022-10-01"), "load_mw"] = None
    strict = write_load_policy(tmp_path, frame)
    out = inprocess_cli.run(["check", "--config", str(strict)], cwd=tmp_path)
    assert out.returncode == 2 and "monitoring.label_delay" in out.stderr and "Traceback" not in out.stderr


def covariate_shift(start: str = "2022-09-01", end: str = "2023-03-10 23:00", seed: int = 3) -> pd.DataFrame:
    """Hourly rows whose noise is large where x is high; from 2023-01-01 most rows have a high x. The
    relation between x and the target never changes (no concept drift): exactly the shift a
    label-free estimate can see, from the features alone."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, end, freq="h")
    after = ts >= pd.Timestamp("2023-01-01")
    x = np.where(after, rng.beta(5, 1.5, len(ts)), rng.uniform(0, 1, len(ts)))
    noisy = x > 0.8
    y = 10 * x + rng.normal(0, np.where(noisy, 30.0, 1.0))
    return pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"), "x": x.round(4),
                         "other": rng.normal(0, 1, len(ts)).round(3), "load_mw": y.round(3)})


def test_the_label_free_trigger_decides_alike_in_cycles_and_replay(store, tmp_path):
    """estimated_metric reads the newest week's features (no labels) through Production's estimator:
    real cycles and the replay make the same retrains, and it fires once the shift arrives, a week
    before any labelled window could show it."""
    config = load_config(write_load_policy(tmp_path, covariate_shift(), monitoring={"label_delay": "7d"},
                                           triggers={"metric_threshold": {"max": 1000},
                                                     "estimated_metric": {"max": 9}, "cooldown": "7d"}))
    data = LabelledData.load(config)
    assert "estimated" in [p.name for p in default_policies(config, WEEK)]
    result = run_backtest(config, start=START, end=END, every=WEEK, data=data,
                          policies=select(default_policies(config, WEEK), ["configured"]))
    run_cycle(config, as_of=START, via="inprocess", data=data, bootstrap=True)
    real, reasons = [], []
    for as_of in result.steps[1:-1]:
        report = run_cycle(config, as_of=as_of.isoformat(), via="inprocess", data=data)
        reasons.append((as_of.date().isoformat(), report.decision.reason))
        if report.outcome in (T.PROMOTED, T.REJECTED):
            real.append((as_of.isoformat(), report.outcome))
    assert result.states[0].retrain_points == real, reasons
    fired = [day for day, reason in reasons if "(no labels yet) > max 9" in reason]
    assert fired and min(fired) <= "2023-01-07", reasons  # the first week of the shift, labels a week away
    assert all(day >= "2023-01-01" for day in fired), reasons
    # the monitor shows the estimate beside the realised metric per window: table, JSON and chart
    seen = run_monitor(config, start=START, end=END, out_dir=tmp_path / "monitor", log_run=False)
    scored = [p for p in seen.points if p.metric is not None]
    assert scored and all(p.estimate is not None and p.estimate != p.metric for p in scored)
    before = [p.estimate for p in scored if p.version == scored[0].version and p.end <= pd.Timestamp("2023-01-01")]
    after = [p.estimate for p in scored if p.version == scored[0].version and p.start >= pd.Timestamp("2023-01-01")]
    assert before and after and min(after) > max(before)  # it sees the covariate shift without labels
    table = pd.read_csv(seen.table)
    assert table.estimate.notna().sum() == len(scored) and "estimate" in seen.to_dict()["windows"][0]
    assert "mae estimated without labels" in seen.dashboard.read_text()
