"""Issue 17 item 6 on generated data (not the bundled bikes): one-day windows against a four-week
training window. A working-day flag holds one value in a day and both in the reference, so it
"drifts" in every window and sets a floor under the drift share; `monitoring.drift.exclude` takes
the calendar columns out, and the share then follows the feature that really changes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from mlflow_retrain.policy.load import load_config
from mlflow_retrain.usecases.monitor import run_monitor
from mlflow_retrain.loop.training import train

SHIFT = pd.Timestamp("2024-03-15")  # from this day the numeric feature moves (and the error with it)
MONITOR_FROM, MONITOR_TO = "2024-03-01", "2024-03-29"


def hourly_frame() -> pd.DataFrame:
    """Hourly rows: hour of day, a working-day flag, and `load`, a daily cycle (the same values every
    day until SHIFT, so it drifts only after it) that drives the target with the calendar."""
    stamps = pd.date_range("2024-01-15", "2024-03-29 23:00", freq="h")
    hour, workingday = stamps.hour.to_numpy(), (stamps.dayofweek < 5).astype(int)
    load = 10 + 3 * np.sin(2 * np.pi * hour / 24) + np.where(stamps >= SHIFT, 4.0, 0.0)
    rng = np.random.default_rng(0)
    target = 5 * load + 8 * workingday + rng.normal(0, 1, len(stamps))
    return pd.DataFrame({"timestamp": stamps, "hour": hour, "workingday": workingday, "load": load, "y": target})


@pytest.fixture
def calendar_policy(store, tmp_path):
    data = tmp_path / "hourly.csv"
    hourly_frame().to_csv(data, index=False)

    def write(**monitoring) -> object:
        raw = {"model_name": "hourly", "data": {"path": str(data), "timestamp": "timestamp", "target": "y"},
               "training": {"params": {"max_iter": 30}, "window": "28d", "holdout": "7d"},
               "monitoring": {"window": "1d", "metric": "mae", **monitoring},
               "triggers": {"data_drift": {"max_drift_share": 0.3},
                            "metric_trend": {"windows": 3, "max_relative_increase": 0.5}}}
        path = tmp_path / "retrain.yaml"
        path.write_text(yaml.safe_dump(raw))
        return load_config(path)

    return write


def monitor(config, tmp_path, name):
    return run_monitor(config, start=MONITOR_FROM, end=MONITOR_TO, out_dir=tmp_path / name, log_run=False)


def test_calendar_columns_floor_the_drift_share_until_excluded(calendar_policy, tmp_path):
    default = calendar_policy()
    train(default, as_of="2024-03-01")  # the reference: 28 days of hourly rows before a 7-day holdout
    before = monitor(default, tmp_path, "default")
    stable = [p for p in before.points if p.start < SHIFT]
    shifted = [p for p in before.points if p.start >= SHIFT]
    assert len(stable) == 14 and len(shifted) == 14

    # the issue: the flag drifts in every window, so the share never falls below 1/3 and a 0.3 limit
    # fires every day; while nothing changes, the share is one constant number
    assert all("workingday" in [c.column for c in p.drift_columns if c.drifted] for p in before.points)
    assert [p.drift_share for p in stable] == [1 / 3] * 14
    assert all("data_drift" in p.fired for p in before.points)
    # ... and the monitor says so, with what to change (issue 25, item 6)
    assert [w for w in before.warnings if "data_drift" in w] == [
        "trigger data_drift fired on 28 of 28 windows: it fires always; exclude the derived, calendar or seasonal "
        "columns that differ from the training rows by construction (monitoring.drift.exclude), or raise "
        "max_drift_share"]

    excluded = calendar_policy(drift={"exclude": ["hour", "workingday"]})
    after = monitor(excluded, tmp_path, "excluded")
    assert all([c.column for c in p.drift_columns] == ["load"] for p in after.points)
    assert [p.drift_share for p in after.points] == [0.0] * 14 + [1.0] * 14  # it follows load, and only load
    assert [("data_drift" in p.fired) for p in after.points] == [False] * 14 + [True] * 14
    assert not [w for w in after.warnings if "data_drift" in w]

    # the CSV carries the per-column verdicts and scores; the dashboard a row per measured feature
    table = pd.read_csv(tmp_path / "excluded" / "monitor.csv")
    assert "drift.load" in table and "drift.workingday" not in table
    assert table.drifted.fillna("").tolist() == [""] * 14 + ["load"] * 14
    html = after.dashboard.read_text()
    assert '"type":"heatmap"' in html.replace(" ", "") and "K-S p_value" in html


def test_the_trend_trigger_marks_the_windows_where_it_would_fire(calendar_policy, tmp_path):
    """Item 8a: the dashboard's fired windows include metric_trend (it had no `mark`, and the monitor
    gave each trigger one window, no history to see a trend in)."""
    config = calendar_policy()
    train(config, as_of="2024-03-01")
    points = monitor(config, tmp_path, "trend").points
    trend = [p.start.date().isoformat() for p in points if "metric_trend" in p.fired]
    assert trend and all(pd.Timestamp(day) >= SHIFT for day in trend), trend
    first = next(i for i, p in enumerate(points) if p.start >= SHIFT)
    assert "metric_trend" in points[first].fired  # the error jumps on the day load moves
