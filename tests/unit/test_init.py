from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import yaml

from mlflow_retrain.policy.load import load_config
from mlflow_retrain.policy.parse import parse_config
from mlflow_retrain.adapters.data import LabelledData
from mlflow_retrain.base.errors import ConfigError, DataError
from mlflow_retrain.usecases.detect import detect_task, detect_timestamp, floor_span, format_span, suggest_thresholds
from mlflow_retrain.usecases.init import init, render, suggest

D = timedelta(days=1)


def table(freq: str, periods: int, target=None) -> pd.DataFrame:
    """Rows every `freq`: a text timestamp (as a CSV gives it), a number, a label, and a target."""
    rng = np.random.default_rng(0)
    stamps = pd.date_range("2023-01-01", periods=periods, freq=freq)
    return pd.DataFrame({
        "ts": stamps.astype(str), "price": rng.normal(10, 2, periods), "store": rng.choice(["a", "b"], periods),
        "units": np.tile(np.arange(101.0), periods // 101 + 1)[:periods] if target is None else target,
    })


def suggested(frame: pd.DataFrame, **options):
    """A suggestion without the walk-forward (its tests are in test_calibrate.py), unless a budget is given."""
    return suggest(frame, target=options.pop("target", "units"), model_name="m", data_path="d.csv",
                   **{"budget": None, **options})


@pytest.mark.parametrize("freq, periods, monitoring, step", [
    ("h", 365 * 24, 7 * D, "1h"),  # 1d holds 24 rows, 7d 168: the first with >= 100
    ("30min", 60 * 48, 2 * D, "30m"),  # 7d would hold enough, but the data must hold 20: 59.98d / 20 -> 2d
    ("D", 730, 30 * D, "1d"),  # no candidate reaches 100 daily rows: the longest, 30d
    ("min", 3 * 24 * 60, timedelta(hours=3), "1m"),  # 1h holds 60, 1d would, but 3 days / 20 = 3h36m
])
def test_windows_follow_the_span_and_density(freq, periods, monitoring, step):
    s = suggested(table(freq, periods))
    span = s.end - s.start
    assert s.monitoring_window == monitoring and format_span(s.step) == step
    assert s.holdout == monitoring and s.cooldown == monitoring  # bench_gate: longer holdouts cost more
    assert s.training_window == floor_span(min(max(span / 2, 10 * monitoring), span - s.holdout))
    assert s.max_age == min(10 * monitoring, s.training_window)
    assert "rows" in s.reasons["monitoring.window"] and "half the span" in s.reasons["training.window"]


def test_hourly_regression_reads_like_the_data():
    s = suggested(table("h", 365 * 24))
    assert (s.timestamp, s.task, s.metric) == ("ts", "regression", "mae")
    assert s.estimator.endswith("HistGradientBoostingRegressor")
    assert s.numeric == ("price",) and s.categorical == ("store",) and s.exclude == ()
    assert s.reasons["data.timestamp"] == "'ts': 100% of a 200-value sample parse as datetimes"


def test_regression_thresholds_are_multiples_of_the_median_absolute_deviation():
    units = pd.Series(np.tile(np.arange(101.0), 3), name="units")  # median 50, MAD 25
    threshold, gate, reasons = suggest_thresholds(units, "regression")
    assert (threshold, gate) == (20.0, 25.0)
    assert "median absolute deviation (MAD) is 25" in reasons["validation"]
    with pytest.raises(DataError, match="target 'units' is constant"):
        suggest_thresholds(pd.Series([3.0] * 10, name="units"), "regression")
    # mostly one value: the MAD is 0, so the mean miss stands in
    assert suggest_thresholds(pd.Series([0.0] * 8 + [10.0, 10.0], name="y"), "regression")[1] == 2.0


def test_classification_thresholds_are_relative_to_the_majority_class():
    s = suggested(table("h", 1000, target=["no"] * 600 + ["yes"] * 400))
    assert (s.task, s.metric, s.gate, s.threshold) == ("classification", "accuracy", 0.6, 0.68)
    assert s.estimator.endswith("HistGradientBoostingClassifier") and s.higher_is_better
    with pytest.raises(DataError, match="holds one class only"):
        suggest_thresholds(pd.Series(["a"] * 5, name="y"), "classification")


@pytest.mark.parametrize("values, task", [
    ([True, False] * 5, "classification"),
    (["x", "y"] * 5, "classification"),
    ([0, 1, 2, 3, 4] * 2, "classification"),
    ([0.0, 1.0] * 5, "classification"),  # whole numbers stored as floats
    (list(range(30)), "regression"),
    ([0.5, 1.5] * 5, "regression"),
])
def test_task_from_the_target(values, task):
    assert detect_task(pd.Series(values, name="y"))[0] == task


def test_task_option_overrides_the_guess():
    s = suggested(table("h", 1000, target=[0, 1] * 500), task="regression")
    assert s.task == "regression" and "task" not in s.reasons


def test_timestamp_typed_beats_parsed_then_names_decide_and_other_dates_are_excluded():
    frame = table("h", 500).assign(created=lambda f: f.ts, date=lambda f: pd.to_datetime(f.ts))
    column, reason = detect_timestamp(frame, "units")
    assert column == "date" and reason == "'date': a datetime column"
    s = suggested(frame)
    assert s.timestamp == "date" and s.exclude == ("ts", "created") and "dates" in s.reasons["data.exclude"]
    assert detect_timestamp(frame.drop(columns="date"), "units") == (
        "ts", "'ts': 100% of a 200-value sample parse as datetimes; chosen by name over created")
    given = suggested(frame, timestamp="created")
    assert given.timestamp == "created" and given.exclude == ("ts", "date") and "data.timestamp" not in given.reasons


def test_a_column_with_text_and_gaps_is_a_label_not_a_date():
    frame = table("h", 500)
    frame.loc[::7, "store"] = None
    assert suggested(frame).categorical == ("store",)


def test_no_time_column_or_unknown_columns_are_one_line_errors():
    with pytest.raises(DataError, match=r"^data: no column holds datetimes \(columns: price, store, units\); "
                                        "pass --timestamp COLUMN$"):
        suggested(table("h", 100).drop(columns="ts"))
    with pytest.raises(DataError, match="--target 'sales' is not a column; the data has ts, price, store, units"):
        suggested(table("h", 100), target="sales")
    with pytest.raises(DataError, match="--timestamp 'when' is not a column"):
        suggested(table("h", 100), timestamp="when")
    with pytest.raises(DataError, match="every row has the same 'ts'"):
        suggested(table("h", 100).assign(ts="2024-01-01"))


def test_rendered_policy_loads_with_the_suggested_values_and_says_how():
    frame = table("h", 365 * 24).rename(columns={"units": "units sold"})
    s = suggest(frame, target="units sold", model_name="yes", data_path="my data/d.csv", budget=None)
    text = render(s, "mlflow-retrain cycle --config retrain.yaml")
    config = parse_config(yaml.safe_load(text))
    assert config.model_name == "yes" and config.data.target == "units sold" and config.data.path == "my data/d.csv"
    assert config.data.features is None and config.data.categorical is None
    assert config.monitoring.window == s.monitoring_window and config.training.window == s.training_window
    assert config.triggers.metric_threshold.max == s.threshold == 20.0 and config.validation.max_metric == 25.0
    assert config.triggers.max_age == s.max_age and config.triggers.cooldown == s.cooldown
    assert "# Next: mlflow-retrain cycle --config retrain.yaml" in text
    said = " ".join(line.strip().removeprefix("# ") for line in text.splitlines())
    assert "median absolute deviation (MAD) is 25" in said and "numeric: price; categorical: store" in said


def test_classification_policy_sets_minimums():
    s = suggested(table("D", 400, target=["no"] * 240 + ["yes"] * 160))
    config = parse_config(yaml.safe_load(render(s, "next")))
    assert config.task == "classification" and config.metric == "accuracy"
    assert config.triggers.metric_threshold.min == s.threshold and config.validation.min_metric == 0.6


def test_spans_in_policy_syntax():
    assert [format_span(t) for t in (7 * D, timedelta(hours=36), timedelta(minutes=90), timedelta(seconds=5))] == [
        "7d", "36h", "90m", "5s"]
    assert floor_span(timedelta(days=36, hours=12)) == 36 * D and floor_span(timedelta(seconds=20)) == timedelta(
        minutes=1)


@pytest.mark.parametrize("name", ["rows.csv.gz", "rows.csv.zip"])
def test_init_writes_a_policy_that_loads_from_a_compressed_csv(tmp_path, name):
    table("h", 2000).to_csv(tmp_path / name, index=False)
    out = tmp_path / "retrain.yaml"
    result = init(tmp_path / name, target="units", out=out, budget=None)
    config = load_config(out)
    assert config.model_name == "rows" and config.data.path == name
    assert result.next_command == f"mlflow-retrain replay --config {out}"
    data = LabelledData.load(config)
    assert data.spec.features == ("price", "store") and data.spec.categorical == ("store",)
    with pytest.raises(ConfigError, match="retrain.yaml exists; pass --force to overwrite it"):
        init(tmp_path / name, target="units", out=out)
    assert init(tmp_path / name, target="units", out=out, force=True, model_name="demand", budget=None).suggestion.model_name == (
        "demand")


def test_init_on_a_hive_partitioned_parquet_folder(tmp_path):
    frame = table("h", 2000).assign(ts=lambda f: pd.to_datetime(f.ts))
    for region, part in frame.assign(region=np.where(np.arange(2000) % 2, "eu", "us")).groupby("region"):
        folder = tmp_path / "sales" / f"region={region}"
        folder.mkdir(parents=True)
        part.drop(columns="region").to_parquet(folder / "part-0.parquet")
    result = init(tmp_path / "sales", target="units", out=tmp_path / "retrain.yaml", budget=None)
    assert result.suggestion.categorical == ("store", "region") and result.suggestion.timestamp == "ts"
    data = LabelledData.load(load_config(tmp_path / "retrain.yaml"))
    assert len(data.frame) == 2000 and data.spec.categorical == ("store", "region")


def test_init_on_an_unknown_target_writes_nothing(tmp_path):
    table("h", 100).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match="--target 'sales' is not a column"):
        init(tmp_path / "d.csv", target="sales", out=tmp_path / "retrain.yaml")
    assert not (tmp_path / "retrain.yaml").exists()


def calendar_table(days: int = 60) -> pd.DataFrame:
    """Hourly rows with calendar columns under names that do and do not say so, and two that are not."""
    stamps = pd.date_range("2024-01-01", periods=days * 24, freq="h")
    rng = np.random.default_rng(1)
    return pd.DataFrame({
        "ts": stamps.astype(str), "hour": stamps.hour, "workingday": (stamps.dayofweek < 5).astype(int),
        "dw": stamps.dayofweek,  # named like nothing: found as a function of the timestamp
        "rain": rng.integers(0, 3, len(stamps)),  # few whole values, not set by the calendar
        "price": rng.normal(10, 2, len(stamps)), "units": rng.normal(100, 10, len(stamps)),
    })


def test_init_leaves_calendar_columns_out_of_drift_and_warns(tmp_path, caplog):
    calendar_table().to_csv(tmp_path / "d.csv", index=False)
    with caplog.at_level("WARNING", logger="mlflow_retrain.usecases.init"):
        result = init(tmp_path / "d.csv", target="units", out=tmp_path / "retrain.yaml", budget=None)
    s = result.suggestion
    assert s.drift_exclude == ("hour", "workingday", "dw")
    (warning,) = s.warnings
    assert "dw (set by the timestamp's day of week)" in warning and "hour (named like a calendar field and set " \
           "by the timestamp's hour of day)" in warning and "left out of drift (monitoring.drift.exclude)" in warning
    assert caplog.messages == [warning] and result.to_dict()["warnings"] == [warning]
    text = (tmp_path / "retrain.yaml").read_text()
    assert "  drift: {exclude: [hour, workingday, dw]}" in text and "# calendar columns: hour" in text
    config = load_config(tmp_path / "retrain.yaml")  # the file loads, and drift still measures the others
    assert config.data.drift.exclude == ("hour", "workingday", "dw")


def test_no_calendar_column_no_warning_and_the_key_is_shown_commented():
    s = suggested(table("h", 365 * 24))
    assert s.drift_exclude == () and s.warnings == ()
    assert "  # drift: {exclude: [column, ...]}" in render(s, "next")


def test_calendar_columns_that_are_every_feature_stay_measured():
    frame = calendar_table()[["ts", "hour", "workingday", "units"]]
    s = suggested(frame)
    assert s.drift_exclude == () and "every feature is one, so drift stays on all of them" in s.warnings[0]
