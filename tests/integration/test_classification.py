"""A classifier (the seed's "retrain when accuracy < 95%") goes through the same loop as a regressor.

The data is the real bike data with a derived label, "busy hour" (more than 150 rentals), so the
code sees only what the policy file names: a target, its features and `task: classification`.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import inprocess_cli
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mlflow_retrain.adapters.registry import Registry
from mlflow_retrain.base import tags as T
from mlflow_retrain.usecases.backtest import default_policies, run_backtest
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.adapters.trainers import IN_PROCESS
from mlflow_retrain.adapters.data import LabelledData, Window
import mlflow.sklearn
from mlflow_retrain.loop.evaluate import evaluate
from mlflow_retrain.usecases.monitor import run_monitor
from mlflow_retrain.loop.training import train

FEATURES = ["hour", "season", "holiday", "weekday", "workingday", "weathersit", "temp", "atemp", "hum", "windspeed"]


@pytest.fixture
def busy_policy(store, tmp_path: Path, bike_frame: pd.DataFrame) -> Path:
    frame = bike_frame[bike_frame.timestamp < "2011-10-01"].copy()
    frame["busy"] = (frame.cnt > 150).astype(int)
    frame.drop(columns=["cnt", "casual", "registered"]).to_csv(tmp_path / "busy.csv", index=False)
    path = tmp_path / "retrain.yaml"
    path.write_text(yaml.safe_dump({
        "model_name": "busy", "experiment": "busy", "task": "classification",
        "data": {"path": "busy.csv", "timestamp": "timestamp", "target": "busy", "features": FEATURES,
                 "categorical": ["season", "holiday", "weekday", "workingday", "weathersit"]},
        "training": {"estimator": "sklearn.ensemble.HistGradientBoostingClassifier", "params": {"max_iter": 30},
                     "window": "60d", "holdout": "7d"},
        "monitoring": {"window": "7d", "metric": "accuracy"},
        "triggers": {"metric_threshold": {"min": 0.9}},
        "validation": {"min_metric": 0.7, "min_improvement": 0.0},
    }))
    return path


def test_a_classifier_is_trained_evaluated_retrained_and_backtested(busy_policy, tmp_path):
    config = load_config(busy_policy)
    first = train(config, as_of="2011-04-30")
    assert first.stage == "Production" and set(first.holdout_metrics) == {"accuracy", "f1", "roc_auc"}

    result = evaluate(config, as_of="2011-06-30", out_dir=tmp_path / "reports")
    data = LabelledData.load(config)
    rows = data.cut(Window.ending(pd.Timestamp("2011-06-30"), timedelta(days=7)))
    predicted = mlflow.sklearn.load_model("models:/busy/1").predict(data.features(rows))
    assert result.metrics["accuracy"] == pytest.approx(np.mean(predicted == rows.busy))  # independent
    assert 0.0 <= result.metrics["roc_auc"] <= 1.0 and 0.0 <= result.metrics["f1"] <= 1.0
    artifacts = {a.path for a in MlflowClient().list_artifacts(result.run_id, "reports")}
    assert artifacts == {"reports/data_drift.html", "reports/model_quality.html"}  # ClassificationPreset

    # accuracy below its min fires the threshold; the better candidate passes the score gates
    report = run_cycle(config, as_of="2011-08-30", via=IN_PROCESS, data=data)
    assert report.decision.fired == ["metric_threshold"] and "< min 0.9" in report.decision.reason
    assert report.outcome == "promoted", report.reason
    version = Registry(config).get(report.candidate_version)
    assert version.stage == "Production" and version.tags[T.DECISION] == "promoted"
    assert "candidate accuracy" in version.tags[T.DECISION_REASON] and "is above the limit 0.7" in version.tags[T.DECISION_REASON]

    # a score's threshold sweep stays below 1 and counts the windows *below* the threshold
    every = timedelta(days=7)
    sweep = [p.config.triggers.metric_threshold.min for p in default_policies(config, every) if p.family == "threshold"]
    assert sweep == [0.94, 0.92, 0.9, 0.875, 0.85, 0.8]
    backtest = run_backtest(config, start="2011-05-01", end="2011-09-30", every=every, data=data,
                            policies=[p for p in default_policies(config, every) if p.name == "never"])
    (never,) = backtest.table()
    below = sum(1 for v in backtest.states[0].series if v is not None and v < 0.9)
    assert 0 < never["windows_worse_than_threshold"] == below


def one_class(data: LabelledData, window: Window) -> bool:
    return len(np.unique(data.target(data.rows(window)))) == 1


def test_roc_auc_through_monitor_backtest_and_a_cycle_whose_holdout_has_one_class(busy_policy, tmp_path):
    """No busy hour between 2011-04-16 and 04-17: a day there holds one class, so roc_auc is
    undefined on it. It is a gap in the monitor, the backtest and the gate, never an exception."""
    raw = yaml.safe_load(busy_policy.read_text())
    raw["monitoring"]["metric"] = "roc_auc"
    raw["training"]["holdout"] = "1d"
    busy_policy.write_text(yaml.safe_dump(raw))
    config = load_config(busy_policy)
    data = LabelledData.load(config)
    day = timedelta(days=1)
    quiet = Window.ending(pd.Timestamp("2011-04-17"), day)
    assert one_class(data, quiet) and not one_class(data, Window.ending(pd.Timestamp("2011-04-10"), day))
    assert train(config, as_of="2011-04-10").stage == "Production"

    monitored = run_monitor(config, start="2011-04-10", end="2011-04-20", every=day, log_run=False,
                            out_dir=tmp_path / "monitor")
    gaps = [p for p in monitored.points if one_class(data, Window(pd.Timestamp(p.start), pd.Timestamp(p.end)))]
    assert [(p.start, p.metric) for p in gaps] == [(quiet.start.to_pydatetime(), None)]
    assert all(0.0 <= p.metric <= 1.0 for p in monitored.points if p not in gaps)

    # every step retrains: the candidate fitted as of 04-17 is judged on the quiet day, and fails the gate
    replay = run_backtest(config, start="2011-04-12", end="2011-04-20", every=day, data=data,
                          policies=[p for p in default_policies(config, day) if p.name == "every-window"])
    (state,) = replay.states
    assert ("2011-04-17T00:00:00", T.REJECTED) in state.retrain_points and state.retrains == 7
    (row,) = replay.table()
    assert 0.0 < row["p90_metric"] <= row["mean_metric"] <= 1.0  # a score's worse tail is below its mean

    report = run_cycle(config, as_of="2011-04-17", force=True, reason="holdout of one class", via=IN_PROCESS,
                       data=data)
    assert report.outcome == T.REJECTED and "candidate roc_auc nan" in report.reason, report.reason


def flights() -> pd.DataFrame:
    """Ten months of hourly flights: carrier, hour, distance, and whether the flight was late (likelier
    in the evening and for one carrier). What real data holds: flights alike in every feature of which
    one was late and one not, exact repeats (distinct flights reported alike), and departure times
    written at the airport's offset (+05:00) or in UTC (+00:00)."""
    rng = np.random.default_rng(3)
    times = pd.date_range("2023-01-01", "2023-10-31 23:00", freq="h", tz="UTC")
    carrier = rng.choice(["AA", "BA", "CX"], len(times))
    chance = 1 / (1 + np.exp(-(-1.2 + 0.15 * (times.hour - 12) + 1.2 * (carrier == "CX"))))
    written = [(t + pd.Timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S+05:00") if i % 3 == 0
               else t.strftime("%Y-%m-%dT%H:%M:%S+00:00") for i, t in enumerate(times)]
    frame = pd.DataFrame({"departure_time": written, "carrier": carrier, "hour": times.hour,
                          "distance": rng.choice([300, 800, 1500], len(times)),
                          "late": (rng.random(len(times)) < chance).astype(int)})
    noise = frame.iloc[[-300, -200]].assign(late=lambda d: 1 - d.late)  # 2 flights alike but for `late`
    return pd.concat([frame, noise, frame.iloc[-250:-245]], ignore_index=True)  # and 5 exact repeats


def test_flights_with_label_noise_repeats_and_two_offsets_train_on_every_row_unless_the_policy_drops(store,
                                                                                                  tmp_path):
    """Issue 26: such a file was refused by every command ("conflicting labels"), its repeats dropped
    silently, its offsets converted silently. Now init and cycle keep every row and say what they found;
    `data.duplicates: drop` drops the repeats; the offsets are converted to UTC with one warning."""
    frame = flights()
    frame.to_csv(tmp_path / "flights.csv", index=False)
    offsets = ("'departure_time' holds times at 2 UTC offsets (+00:00: 4,868 row(s), +05:00: 2,435 row(s)); "
               "each is converted to UTC")
    made = inprocess_cli.run(["init", "--data", "flights.csv", "--target", "late", "--model-name", "flights"])
    assert made.returncode == 0 and made.stderr.count(offsets) == 1, made.stderr
    text = (tmp_path / "retrain.yaml").read_text()
    assert "# 5 exact repeat(s) and 4 row(s) with conflicting labels in 7,303 rows." in text
    assert "\n  duplicates: keep\n" in text and "task: classification" in text

    done = inprocess_cli.run(["cycle", "--config", "retrain.yaml", "--retrain-via", "inprocess", "--json"])
    assert done.returncode == 0 and done.stderr.count(offsets) == 1, done.stderr
    report = json.loads(done.stdout)
    counts = {"rows": 7303, "repeats": 5, "conflicts": 4, "policy": "keep", "dropped": 0, "window": None}
    assert {k: report["data"][k] for k in counts} == counts and report["candidate_version"] == "1"
    assert report["data"]["summary"] == (f"{tmp_path / 'flights.csv'}: 7,303 row(s) read, 5 exact repeat(s) kept, "
                                         "4 row(s) with conflicting labels kept (data.duplicates: keep)")
    audit = json.loads(Path(MlflowClient().download_artifacts(report["cycle_run_id"], "decision.json")).read_text())
    assert audit["data"] == report["data"]
    # every row trained on or scored, repeats and both labels included, at its UTC time
    client = MlflowClient()
    params = client.get_run(client.get_model_version("flights", "1").run_id).data.params
    stamps = pd.to_datetime(frame.departure_time, utc=True, format="mixed").dt.tz_localize(None)
    for window, rows in (("train_window", "train_rows"), ("holdout_window", "holdout_rows")):
        cut = Window.parse(params[window])
        assert int(params[rows]) == int(((stamps > cut.start) & (stamps <= cut.end)).sum())
    assert Window.parse(params["holdout_window"]).end == stamps.max()
    assert stamps.iloc[-7:].between(Window.parse(params["train_window"]).start, stamps.max()).all()

    (tmp_path / "retrain.yaml").write_text(text.replace("duplicates: keep", "duplicates: drop"))
    dropped = inprocess_cli.run(["check", "--config", "retrain.yaml"])
    line = (f"{tmp_path / 'flights.csv'}: 7,303 row(s) read, 5 exact repeat(s) dropped, 4 row(s) with conflicting "
            "labels kept (data.duplicates: drop)")
    assert dropped.returncode == 0 and f"\ndata: {line}\n" in dropped.stdout, dropped.stdout
    assert f"WARNING mlflow_retrain.adapters.data: {line}\n" in dropped.stderr, dropped.stderr
