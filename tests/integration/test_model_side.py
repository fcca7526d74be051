"""train / evaluate on a real sqlite store with real Evidently reports and the real bike data."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from mlflow_retrain.base import tags as T
from mlflow_retrain.cli import cli
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.adapters.data import LabelledData, Window
import mlflow.sklearn
from mlflow_retrain.loop.evaluate import evaluate
from mlflow_retrain.adapters.registry import Registry
from mlflow_retrain.loop.training import train


def registry_state(name: str) -> list[tuple]:
    """Everything a bad command could have changed: versions, stages, aliases, tags."""
    client = MlflowClient()
    try:
        model = client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        return []
    versions = client.search_model_versions(f"name = '{name}'")
    return [tuple(sorted(model.aliases.items()))] + sorted(
        (v.version, v.current_stage, tuple(sorted(v.tags.items()))) for v in versions)


def test_first_version_bootstraps_to_production_then_next_goes_to_staging(store, write_policy):
    config = load_config(write_policy())
    first = train(config, as_of="2011-04-30")
    assert (first.version, first.stage) == ("1", "Production")
    second = train(config, as_of="2011-06-30", trigger="metric_threshold", reason="mae 90 > max 80")
    assert (second.version, second.stage) == ("2", "Staging")

    registry = Registry(config)
    assert registry.production().version == "1" and registry.staging().version == "2"
    client = MlflowClient()
    assert {k: str(v) for k, v in client.get_registered_model("bikes").aliases.items()} == {"production": "1",
                                                                                             "staging": "2"}
    v1, v2 = registry.get("1"), registry.get("2")
    assert v1.stage == "Production" and v1.tags[T.TRIGGER] == "bootstrap" and v1.tags[T.DECISION] == "promoted"
    assert v2.tags[T.TRIGGER] == "metric_threshold" and v2.tags[T.REASON] == "mae 90 > max 80"
    assert v2.tags[T.TRAIN_WINDOW] == second.train_window and v2.tags[T.DECISION] == "pending"

    run = client.get_run(second.run_id)
    assert run.data.params["train_window"] == second.train_window
    assert run.data.metrics["holdout_mae"] == pytest.approx(second.holdout_metrics["mae"])
    digests = {i.tags[0].value: i.dataset.digest for i in run.inputs.dataset_inputs}
    assert digests == {"training": second.train_digest, "holdout": second.holdout_digest}
    # the registered model loads and reproduces the logged holdout metric
    data = LabelledData.load(config)
    rows = data.cut(Window.parse(second.holdout_window))
    pred = mlflow.sklearn.load_model("models:/bikes/Staging").predict(data.features(rows))
    assert np.mean(np.abs(pred - rows.cnt)) == pytest.approx(second.holdout_metrics["mae"])


def test_evaluate_logs_metrics_and_evidently_reports(prod_store, write_policy, tmp_path):
    config = load_config(write_policy())  # v1 trained as of 2011-04-30 on this policy (`prod_store`)
    result = evaluate(config, as_of="2011-08-31", out_dir=tmp_path / "reports")
    assert result.version == "1"
    # independent computation of the metric on the same window
    frame = pd.read_csv(config.data_path(), parse_dates=["timestamp"])
    window = frame[(frame.timestamp > pd.Timestamp("2011-08-24")) & (frame.timestamp <= pd.Timestamp("2011-08-31"))]
    assert result.rows == len(window) > 100  # the real data misses a few hours
    pred = mlflow.sklearn.load_model("models:/bikes/1").predict(window[list(config.data.features)])
    assert result.metrics["mae"] == pytest.approx(np.mean(np.abs(pred - window.cnt)))
    assert 0.0 <= result.drift.drift_share <= 1.0 and result.drift.total_columns == 10
    run = MlflowClient().get_run(result.run_id)
    assert run.data.metrics["drift_share"] == pytest.approx(result.drift.drift_share)
    assert run.data.metrics["mae"] == pytest.approx(result.metrics["mae"])
    artifacts = {a.path for a in MlflowClient().list_artifacts(result.run_id, "reports")}
    assert artifacts == {"reports/data_drift.html", "reports/model_quality.html"}
    html = Path(result.reports[0]).read_text()
    assert "<html" in html.lower() and "src=\"http" not in html  # self-contained


def test_cli_train_and_evaluate_json(store, write_policy):
    path = write_policy()
    runner = CliRunner()
    out = runner.invoke(cli, ["train", "--config", str(path), "--as-of", "2011-04-30", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["stage"] == "Production"
    out = runner.invoke(cli, ["evaluate", "--config", str(path), "--as-of", "2011-05-31", "--no-reports", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["metrics"]["mae"] > 0


@pytest.mark.parametrize("breakage, message", [
    ("missing_column", "missing column(s) temp"),
    ("nan_target", "target 'cnt' is empty (NaN) in 3 row(s)"),
    ("bad_timestamp", "are not timestamps"),
    ("as_of_outside", "is outside the data"),
    ("empty_window", "holds no rows"),
    ("bad_config", "training.window: '14 days' is not a span"),
    ("unknown_key", "triggers.metric_treshold is not a known key"),
    ("text_feature", "list it under data.categorical"),
])
def test_bad_input_is_one_line_nonzero_and_changes_nothing(prod_store, write_policy, small_data, bike_frame, breakage,
                                                           message):
    path = write_policy()
    before = registry_state("bikes")
    runs_before = len(mlflow.search_runs(search_all_experiments=True))
    frame = bike_frame[bike_frame.timestamp < "2011-10-01"].copy()
    args = ["train", "--config", str(path), "--as-of", "2011-06-30"]
    if breakage == "missing_column":
        frame.drop(columns=["temp"]).to_csv(small_data, index=False)
    elif breakage == "nan_target":
        frame.loc[frame.index[100:103], "cnt"] = np.nan
        frame.to_csv(small_data, index=False)
    elif breakage == "bad_timestamp":
        frame.loc[frame.index[5], "timestamp"] = "yesterday-ish"
        frame.to_csv(small_data, index=False)
    elif breakage == "as_of_outside":
        args[-1] = "2013-01-01"
    elif breakage == "empty_window":
        frame[(frame.timestamp < "2011-06-20") | (frame.timestamp > "2011-07-01")].to_csv(small_data, index=False)
    elif breakage == "bad_config":
        path = write_policy(training={"window": "14 days"})
        args[2] = str(path)
    elif breakage == "unknown_key":
        path = write_policy(triggers={"metric_treshold": {"max": 3}})
        args[2] = str(path)
    elif breakage == "text_feature":
        frame["temp"] = "warm"
        frame.to_csv(small_data, index=False)
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 2, out.output
    assert message in out.output
    assert len(out.output.strip().splitlines()) == 1 and out.output.startswith("error: ")
    assert registry_state("bikes") == before
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs_before


@pytest.mark.parametrize("uri, message", [
    ("models:/bikes/Staging", "has no Staging version"),
    ("models:/bikes/Shadow", "unknown stage 'Shadow'"),
    ("models:/bikes/7", "has no version 7"),
])
def test_evaluate_unknown_stage_or_version(prod_store, write_policy, uri, message):
    path = write_policy()
    before = registry_state("bikes")
    out = CliRunner().invoke(cli, ["evaluate", "--config", str(path), "--model-uri", uri, "--no-reports"])
    assert out.exit_code == 2 and message in out.output
    assert registry_state("bikes") == before


def test_evaluate_unknown_model(store, write_policy):
    out = CliRunner().invoke(cli, ["evaluate", "--config", str(write_policy()), "--no-reports"])
    assert out.exit_code == 2 and "registered model 'bikes' does not exist" in out.output


def test_unreachable_tracking_server(store, write_policy, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    mlflow.set_tracking_uri("http://127.0.0.1:9")
    out = CliRunner().invoke(cli, ["train", "--config", str(write_policy()), "--as-of", "2011-04-30"])
    assert out.exit_code == 2 and "tracking server http://127.0.0.1:9 is unreachable" in out.output
