"""Evidently's reports follow the policy: the drift verdict uses the trigger's share, each report names
the version, the windows and the thresholds, and a cycle writes them per `monitoring.reports`."""

from __future__ import annotations

import re

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from mlflow_retrain.policy.config import DataConfig
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.adapters.data import Window
from mlflow_retrain.decide.triggers.drift import data_drift
from mlflow_retrain.measure.drift import DriftMeter
from mlflow_retrain.adapters.reports import PREDICTION, drift_report, evidently_drift_share, quality_report

VERDICT = re.compile(r"Dataset Drift is (detected|NOT detected)\. Dataset drift detection threshold is ([0-9.]+)")


def verdict(page: str) -> tuple[bool, float]:
    found = VERDICT.search(page)
    assert found, "Evidently's dataset drift verdict is not in the page"
    return found.group(1) == "detected", float(found.group(2))


def shifted(drifting: int, columns: int = 4, rows: int = 300) -> tuple[pd.DataFrame, pd.DataFrame, DataConfig]:
    """A reference and a window where exactly `drifting` of `columns` numeric columns moved far."""
    rng = np.random.default_rng(1)
    names = [f"f{i}" for i in range(columns)]
    reference = pd.DataFrame({n: rng.normal(0, 1, rows) for n in names})
    current = pd.DataFrame({n: rng.normal(5 if i < drifting else 0, 1, rows) for i, n in enumerate(names)})
    return reference, current, DataConfig(path="x", timestamp="t", target="y", features=tuple(names), categorical=())


@pytest.mark.parametrize("drifting, limit", [(2, 0.5), (3, 0.5), (1, 0.5), (3, 0.7), (4, 0.7)])
def test_the_drift_report_verdict_is_the_triggers(tmp_path, drifting, limit):
    # at 2 of 4 columns and max 0.5 the share equals the limit: Evidently's own rule (share >= threshold)
    # would say "detected" where the trigger (share > max) does not fire
    reference, current, spec = shifted(drifting)
    numbers = drift_report(reference, current, spec, tmp_path / "d.html", drift_share=limit)
    fired = data_drift(numbers.drift_share, max_drift_share=limit).fired
    detected, shown = verdict((tmp_path / "d.html").read_text())
    assert numbers.drifted_columns == drifting and detected == fired == (drifting / 4 > limit)
    assert shown == pytest.approx(limit)
    # the numbers are the fast meter's: Evidently's default tests per column, untouched by the share
    meter = DriftMeter(reference, spec).measure(current)
    assert (meter.drifted_columns, meter.drift_share) == (numbers.drifted_columns, numbers.drift_share)


def test_the_share_is_nudged_only_where_a_share_can_equal_it():
    assert evidently_drift_share(0.7, 10) > 0.7 and evidently_drift_share(0.7, 10) == pytest.approx(0.7)
    assert evidently_drift_share(0.7, 4) == 0.7 and evidently_drift_share(0.5, 3) == 0.5


def test_reports_name_the_version_windows_and_policy_thresholds(tmp_path, write_policy, bike_frame):
    config = load_config(write_policy(triggers={"metric_threshold": {"max": 80}, "data_drift": {"max_drift_share": 0.7}},
                                      validation={"max_metric": 120}))
    frame = bike_frame.assign(timestamp=pd.to_datetime(bike_frame.timestamp))
    reference, rows = frame.iloc[:1000], frame.iloc[3000:3168]
    window = Window(rows.timestamp.min(), rows.timestamp.max())

    class Version:  # the fields a registry VersionInfo gives the heading
        version, tags = "3", {"retrain.train_window": "2011-01-01T00:00:00..2011-02-12T00:00:00"}

    drift_report(reference, rows, config.data, tmp_path / "drift.html", config=config, version=Version, window=window)
    page = (tmp_path / "drift.html").read_text()
    title = re.search(r"<title>([^<]*)</title>", page).group(1)
    assert "bikes v3" in title and window.iso() in title
    header = re.search(r"<header.*?</header>", page, re.S).group(0)
    assert "training window 2011-01-01T00:00:00..2011-02-12T00:00:00" in header
    assert f"monitoring window {window.iso()}" in header and "&gt; 0.7 (max_drift_share)" in header
    assert verdict(page)[1] == pytest.approx(0.7)  # not Evidently's 0.5

    scored = rows.assign(**{PREDICTION: rows.cnt * 1.1})
    quality_report(scored, config.data, "regression", tmp_path / "quality.html", config=config, version=Version,
                   window=window)
    header = re.search(r"<header.*?</header>", (tmp_path / "quality.html").read_text(), re.S).group(0)
    assert "Model quality: bikes v3" in header and window.iso() in header
    assert "mae &gt; 80" in header and "mae &lt;= 120 (max_metric)" in header


def reports_of(run_id: str) -> set[str]:
    return {a.path for a in MlflowClient().list_artifacts(run_id, "reports")}


def numbers_of(run_id: str) -> set[str]:
    return set(MlflowClient().get_run(run_id).data.metrics)


NO_OP = {"metric_threshold": {"max": 200}, "data_drift": {"max_drift_share": 0.95}}
FIRING = {"metric_threshold": {"max": 60}, "data_drift": {"max_drift_share": 0.95}}


@pytest.mark.parametrize("reports, triggers, expected", [
    ("on_change", NO_OP, set()),
    ("always", NO_OP, {"reports/data_drift.html", "reports/model_quality.html"}),
    ("on_change", FIRING, {"reports/data_drift.html", "reports/model_quality.html"}),
    ("never", FIRING, set()),
])
def test_a_cycle_writes_reports_per_policy_and_the_numbers_always(prod_store, write_policy, reports, triggers,
                                                                  expected):
    config = load_config(write_policy(triggers=triggers, monitoring={"reports": reports}))
    report = run_cycle(config, as_of="2011-05-31", via="inprocess")
    assert report.outcome == ("promoted" if triggers is FIRING else "no_retrain")
    assert reports_of(report.cycle_run_id) == expected and report.reports == sorted(expected)
    numbers = numbers_of(report.cycle_run_id)  # the window scores (monitoring_mae) and the drift share
    assert "drift_share" in numbers and any(n.startswith("monitor") and n.endswith("_mae") for n in numbers), numbers
    if expected:  # the report on the window that decided names Production (v1) and the policy
        page = mlflow.artifacts.download_artifacts(run_id=report.cycle_run_id,
                                                   artifact_path="reports/data_drift.html")
        text = open(page, encoding="utf-8").read()
        assert "Data drift: bikes v1, 2011-05-24T00:00:00..2011-05-31T00:00:00" in text
        assert "Reference: the version&#x27;s training window 2011-" in text


def test_a_feature_empty_in_the_window_is_left_out_not_a_crash(tmp_path):
    """A sensor that stopped reporting: Evidently refuses a report with an empty column; the cycle's
    report leaves it out of the count, as DriftMeter does, and says the same numbers."""
    reference, current, spec = shifted(drifting=2)
    current = current.assign(f0=np.nan)
    numbers = drift_report(reference, current, spec, tmp_path / "drift.html")
    fast = DriftMeter(reference, spec).measure(current)
    assert numbers.total_columns == fast.total_columns == 3
    assert numbers.drifted_columns == fast.drifted_columns and numbers.drift_share == pytest.approx(fast.drift_share)
    assert (tmp_path / "drift.html").exists()
