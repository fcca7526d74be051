"""A hive-partitioned Parquet dataset (`date=YYYY-MM-DD/`) read window by window (`source.py`).

The same generated hourly load is written twice: as one CSV file and as a dataset with one folder
per day. Cycles replayed over both decide the same, on the same holdout rows (equal digests); the
monitor's series is the same when it reads the dataset in chunks; a no-op cycle reads only the
partitions its windows need, so an unreadable old partition does not break it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import yaml
from click.testing import CliRunner
from synthetic import energy_load

from mlflow_retrain.cli import cli
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.adapters.data import LabelledData, WindowedData
from mlflow_retrain.usecases.monitor import run_monitor
from mlflow_retrain.adapters.source import key_span
from mlflow_retrain.decide.window import Window

START, END = "2022-10-01", "2023-02-28 23:00"  # the level shift of `energy_load` is on 2023-01-01


@pytest.fixture(scope="module")
def load() -> pd.DataFrame:
    frame = energy_load(START, END).astype({"hour": "int64", "day_of_week": "int64"})
    return frame.assign(date=frame.timestamp.str[:10])  # the partition key, a column in both forms


def write_dataset(frame: pd.DataFrame, folder: Path) -> Path:
    """One folder per day, the timestamp stored as an Arrow timestamp (what a pipeline writes)."""
    table = pa.Table.from_pandas(frame.assign(timestamp=pd.to_datetime(frame.timestamp)), preserve_index=False)
    ds.write_dataset(table, folder, format="parquet", partitioning=["date"], partitioning_flavor="hive")
    return folder


def write_policy(folder: Path, name: str, data: Path, **triggers) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "model_name": name, "experiment": name, "task": "regression",
        "data": {"path": str(data), "timestamp": "timestamp", "target": "load_mw", "exclude": ["date"]},
        "training": {"estimator": "sklearn.linear_model.Ridge", "window": "30d", "holdout": "7d"},
        "monitoring": {"window": "1d", "metric": "mae"},
        "triggers": triggers or {"metric_threshold": {"max": 25}, "metric_trend": {"windows": 5,
                                                                                    "max_relative_increase": 0.5}},
        "validation": {"max_metric": 200}}))
    return path


@pytest.fixture
def both(store, tmp_path, load):
    """The CSV policy and the dataset policy, two registered models in one real store."""
    load.to_csv(tmp_path / "load.csv", index=False)
    dataset = write_dataset(load, tmp_path / "load")
    return (load_config(write_policy(tmp_path, "csv", tmp_path / "load.csv")),
            load_config(write_policy(tmp_path, "parquet", dataset)))


def decisions(report) -> tuple:
    return (report.outcome, report.candidate_version, report.reason, report.holdout_digest,
            [(w.window, w.rows, w.metric) for w in report.monitoring])


def test_cycles_on_the_dataset_decide_as_on_one_csv_file(both):
    csv, parquet = both
    assert isinstance(LabelledData.load(parquet), WindowedData)
    replay = [str(d.date()) for d in pd.date_range("2022-11-15", "2023-02-28", freq="14D")]
    seen = {name: [decisions(run_cycle(config, as_of=as_of, via="inprocess")) for as_of in replay]
            for name, config in (("csv", csv), ("parquet", parquet))}
    assert seen["parquet"] == seen["csv"]
    outcomes = [d[0] for d in seen["csv"]]
    assert outcomes[0] == "promoted" and "no_retrain" in outcomes and outcomes.count("promoted") >= 2, outcomes
    # the newest row is found from the newest partitions, and a cycle without --as-of uses it
    now = {config.model_name: run_cycle(config, dry_run=True) for config in (csv, parquet)}
    assert decisions(now["parquet"])[:3] == decisions(now["csv"])[:3]
    # the rows the duplicates check saw: the whole file, or the dataset's newest monitoring window
    counts = {name: (r.data["rows"], r.data["repeats"], r.data["conflicts"]) for name, r in now.items()}
    assert counts == {"csv": (len(pd.read_csv(csv.data_path())), 0, 0), "parquet": (24, 0, 0)}
    assert now["parquet"].data["summary"].startswith(
        f"{parquet.data.path} (window 2023-02-27T23:00:00..2023-02-28T23:00:00): 24 row(s) read, 0 exact repeat(s)")


def test_the_monitor_reads_the_dataset_in_chunks_and_scores_as_on_one_file(both, monkeypatch, tmp_path):
    csv, parquet = both
    for config in both:
        run_cycle(config, as_of="2022-12-01", via="inprocess")
    whole = run_monitor(csv, out_dir=tmp_path / "csv", log_run=False)
    monkeypatch.setattr("mlflow_retrain.adapters.data.CHUNK_ROWS", 24 * 10)  # ten days of hourly rows a chunk
    data = LabelledData.load(parquet)
    chunks = list(data.slabs([Window(pd.Timestamp("2022-12-01") + pd.Timedelta(days=d), pd.Timestamp(
        "2022-12-02") + pd.Timedelta(days=d)) for d in range(30)]))
    assert len(chunks) == 3 and max(len(slab.frame) for _, slab in chunks) <= 24 * 10
    chunked = run_monitor(parquet, data=data, out_dir=tmp_path / "parquet", log_run=False)
    assert [(p.start, p.rows, p.metric, p.drift_share, p.fired) for p in chunked.points] == [
        (p.start, p.rows, p.metric, p.drift_share, p.fired) for p in whole.points]
    assert len(whole.points) == 90 and sum(p.rows for p in whole.points) > 2000


def test_a_no_op_cycle_reads_only_the_partitions_its_windows_need(store, tmp_path, load):
    dataset = write_dataset(load, tmp_path / "load")
    config = load_config(write_policy(tmp_path, "parquet", dataset, metric_threshold={"max": 1000}))
    run_cycle(config, as_of="2023-02-14", via="inprocess")  # v1, trained on 2023-01-08..02-07
    # every partition before the training window of a cycle at the end is unreadable or of another schema
    days = sorted(dataset.iterdir())
    for folder in days[:90]:
        (next(folder.glob("*.parquet"))).write_bytes(b"not parquet")
    pd.DataFrame({"load_mw": ["text"]}).to_parquet(days[90] / "other.parquet")
    data = LabelledData.load(config)
    report = run_cycle(config, data=data, via="inprocess")
    assert report.outcome == "no_retrain" and report.as_of == "2023-02-28T23:00:00"
    # the newest days (monitoring window, rows since v1, the training window's count), never the old ones
    assert data.source.fragments_read <= 2 * (len(days) - 90), data.source.fragments_read
    # a command that reads everything says which files broke it, in one line, exit 2
    result = CliRunner().invoke(cli, ["backtest", "--config", str(config.source), "--from", "2023-01-01"])
    assert result.exit_code == 2 and "cannot be read" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("broken, message", [
    ("schema", "cannot be read together"),
    ("timestamp", "no timestamp column 'timestamp'"),
])
def test_a_dataset_the_cycle_cannot_read_is_one_line_and_exit_2(store, tmp_path, load, broken, message):
    dataset = write_dataset(load[load.timestamp >= "2023-02-01"], tmp_path / "load")
    newest = max(dataset.iterdir())
    rows = pd.read_parquet(next(newest.glob("*.parquet")))
    if broken == "schema":  # one day's file where the target is text
        rows.assign(load_mw="n/a").to_parquet(newest / "part-1.parquet")
    else:  # the newest day written without its timestamp
        next(newest.glob("*.parquet")).unlink()
        rows.drop(columns="timestamp").to_parquet(newest / "part-1.parquet")
    policy = write_policy(tmp_path, "parquet", dataset)
    result = CliRunner().invoke(cli, ["cycle", "--config", str(policy), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("keys, span", [
    ({"date": "2012-01-31"}, ("2012-01-30", "2012-02-02")),
    ({"year": 2012, "month": 2}, ("2012-01-31", "2012-03-02")),
    ({"year": 2012, "month": 2, "day": 29, "hour": 23}, ("2012-02-28 23:00", "2012-03-02")),
    ({"region": "eu", "ym": "2012-12"}, ("2012-11-30", "2013-01-02")),
    ({"region": "eu", "year": "unknown"}, None),
    ({}, None),
])
def test_partition_keys_give_the_time_a_partition_can_hold_with_a_day_of_margin(keys, span):
    expected = None if span is None else Window(pd.Timestamp(span[0]), pd.Timestamp(span[1]))
    assert key_span(keys) == expected
