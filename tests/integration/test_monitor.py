"""Monitoring on a real sqlite store: the series, model switches at retrains, downtime, bad spans."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from sklearn.metrics import mean_absolute_error

from mlflow_retrain.adapters.registry import Registry
from mlflow_retrain.base import tags as T
from mlflow_retrain.cli import cli
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.loop.manual import promote, rollback
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.base.errors import DataError
from mlflow_retrain.usecases.monitor import run_monitor


def test_series_matches_an_independent_computation(prod_store, write_policy, small_data, tmp_path):
    config = load_config(write_policy())
    result = run_monitor(config, start="2011-05-01", end="2011-06-05", out_dir=tmp_path / "mon")
    assert [p.version for p in result.points] == ["1"] * 5 and result.healthy
    frame = pd.read_csv(small_data, parse_dates=["timestamp"])
    model = mlflow.pyfunc.load_model("models:/bikes/1")
    for point in result.points[::2]:
        rows = frame[(frame.timestamp > point.start) & (frame.timestamp <= point.end)]
        expected = mean_absolute_error(rows.cnt, model.predict(rows[list(config.data.features)]))
        assert point.rows == len(rows) and point.metric == pytest.approx(expected, rel=1e-9)
        assert 0.0 <= point.drift_share <= 1.0
    # one MLflow run holds the series with steps and window timestamps, plus the CSV and dashboard
    history = MlflowClient().get_metric_history(result.run_id, "mae")
    assert [m.step for m in history] == list(range(5))
    assert history[0].timestamp == int(pd.Timestamp(result.points[0].end).timestamp() * 1000)
    assert {a.path for a in MlflowClient().list_artifacts(result.run_id)} >= {"monitor.csv", "dashboard.html"}
    html = result.dashboard.read_text()
    # plotly, inlined once: no <script src=...> (the bundle's own text holds URLs, never loaded)
    assert html.count("* plotly.js v") == 1 and "<script src=" not in html and '<div id="monitor"' in html


def test_a_retrain_in_the_middle_switches_the_scored_model(prod_store, write_policy, tmp_path):
    config = load_config(write_policy(triggers={"metric_threshold": {"max": 60}}))
    assert run_cycle(config, as_of="2011-05-31", via="inprocess").outcome == "promoted"
    result = run_monitor(config, start="2011-05-10", end="2011-06-21", out_dir=tmp_path / "mon", with_reports=True)
    starts = [(p.start.date().isoformat(), p.version) for p in result.points]
    assert starts == [("2011-05-10", "1"), ("2011-05-17", "1"), ("2011-05-24", "1"),
                      ("2011-05-31", "2"), ("2011-06-07", "2"), ("2011-06-14", "2")]
    (event,) = result.events
    assert (event.version, event.decision, event.trigger) == ("2", "promoted", "metric_threshold")
    assert "v2" in result.dashboard.read_text()
    # the windows v1 served above the threshold are the ones marked as fired
    fired = [p for p in result.points if p.fired]
    assert [bool(p.fired) for p in result.points[:3]] == [p.metric > 60 for p in result.points[:3]] and fired
    # --reports: Evidently's own drift and quality reports for each window where something fired
    assert len(result.reports) == 2 * len(fired)
    assert all(Path(r).read_text().lstrip().lower().startswith("<!doctype html") for r in result.reports)


def test_unloadable_model_and_data_gap_are_downtime_with_exit_code_4(prod_store, write_policy, tmp_path):
    path = write_policy(monitoring={"window": "7d", "metric": "mae", "max_data_gap": "2d"})
    client = MlflowClient()
    # v2 points at artifacts that are gone (a wiped bucket): a real registry entry that cannot load
    gone = client.create_model_version("bikes", source=str(tmp_path / "gone"), run_id=None)
    client.set_model_version_tag("bikes", gone.version, T.PROMOTED_AT, "2011-09-01T00:00:00")
    client.transition_model_version_stage("bikes", gone.version, "Production", archive_existing_versions=True)
    out = CliRunner().invoke(cli, ["monitor", "--config", str(path), "--from", "2011-08-18", "--to", "2011-10-13",
                                   "--out", str(tmp_path / "mon")])
    assert out.exit_code == 4, out.output
    assert "model_unloadable: v2" in out.output or "data_gap" in out.output
    table = pd.read_csv(tmp_path / "mon" / "monitor.csv")
    assert list(table.version.astype(str)) == ["1", "1", "2", "2", "2", "2", "2", "2"]
    served_by_v1, served_by_v2 = table[table.version == 1], table[table.version == 2]
    assert served_by_v1.metric.notna().all() and served_by_v2.metric.isna().all()  # a gap, not zero
    assert served_by_v2.health.str.contains("model_unloadable: v2").all()
    assert table.health.fillna("").str.contains("data_gap").tolist() == [False] * 6 + [True] * 2
    assert "model_unloadable" in (tmp_path / "mon" / "dashboard.html").read_text()


@pytest.mark.parametrize("args, message", [
    (["--from", "2011-06-01", "--to", "2011-06-03"], "shorter than one window"),
    (["--from", "2013-01-01"], "--from 2013-01-01T00:00:00 is outside the data"),
    (["--to", "garbage"], "--to 'garbage' is not an ISO 8601 time"),
    (["--from", "2011-06-01", "--to", "2009-01-01"], "before the data starts"),
    (["--every", "sometimes"], "--every"),
])
def test_bad_spans_are_one_line_errors(prod_store, write_policy, tmp_path, args, message):
    out = CliRunner().invoke(cli, ["monitor", "--config", str(write_policy()), "--out", str(tmp_path / "m"), *args])
    assert out.exit_code == 2 and message in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_nothing_to_monitor_before_any_production(store, write_policy):
    MlflowClient().create_registered_model("bikes")
    with pytest.raises(DataError, match="never been in Production"):
        run_monitor(load_config(write_policy()), log_run=False)


# the small data's newest row
NEWEST = pd.Timestamp("2011-09-30 23:00")


def test_the_newest_partial_window_is_shown_marked_and_never_downtime(prod_store, write_policy, tmp_path):
    config = load_config(write_policy(monitoring={"window": "7d", "metric": "mae", "max_data_gap": "2d"},
                                      triggers={"metric_threshold": {"max": 1}}))  # every whole window fires
    result = run_monitor(config, start="2011-09-01", out_dir=tmp_path / "mon", now=NEWEST + pd.Timedelta(hours=5))
    assert [p.partial for p in result.points] == [False] * 4 + [True]
    last = result.points[-1]
    assert (pd.Timestamp(last.start), pd.Timestamp(last.end)) == (pd.Timestamp("2011-09-29"), NEWEST)
    assert last.rows == 47 and last.metric > 0 and last.version == "1"
    assert not last.fired and all(p.fired for p in result.points[:-1])  # triggers judge whole windows
    assert result.healthy and not last.health
    assert pd.read_csv(result.table).partial.tolist() == [False] * 4 + [True]
    assert [w["partial"] for w in result.to_dict()["windows"]] == [False] * 4 + [True]


def test_labels_that_stopped_arriving_are_a_data_gap_at_the_end_of_the_span(prod_store, write_policy, tmp_path):
    config = load_config(write_policy(monitoring={"window": "7d", "metric": "mae", "max_data_gap": "2d"}))
    gap = "data_gap: no labelled data for {} by {}, the newest as of 2011-09-30T23:00 (max 2d)"  # one unit: days
    # a replay to --to: three days past the newest label, inside a window that is not whole yet
    replay = run_monitor(config, start="2011-09-01", end="2011-10-04", out_dir=tmp_path / "replay", log_run=False)
    assert replay.health == [gap.format("3d", "2011-10-04")]
    assert not any(p.health for p in replay.points) and replay.points[-1].partial  # the span's issue
    # live: the span ends at the clock; a day after the newest label is fine, three days are not
    live = run_monitor(config, start="2011-09-01", out_dir=tmp_path / "live", log_run=False,
                       now=NEWEST + pd.Timedelta(days=1))
    assert live.healthy
    stopped = run_monitor(config, start="2011-09-01", out_dir=tmp_path / "stopped", log_run=False,
                          now=pd.Timestamp("2011-10-04"))
    assert stopped.health == [gap.format("3d", "2011-10-04")]


def test_moves_by_hand_serve_from_their_data_time_in_the_order_they_were_made(prod_store, write_policy, tmp_path):
    config = load_config(write_policy())
    client = MlflowClient()
    v1 = client.get_model_version("bikes", "1")
    client.create_model_version("bikes", source=v1.source, run_id=v1.run_id)  # v2: the same model again

    def served() -> list[str]:
        result = run_monitor(config, start="2011-05-10", end="2011-06-21", out_dir=tmp_path / "mon", log_run=False)
        return [p.version for p in result.points]

    promote(config, "2", "by hand", as_of="2011-06-01")
    v2 = Registry(config).get("2").tags
    assert v2[T.PROMOTED_AT].startswith("2011-06-01") and not v2[T.PROMOTED_WALL].startswith("2011")
    assert served() == ["1"] * 4 + ["2"] * 2  # from its data time, not the clock's
    # undone at the same data time: the move made last is the one serving
    rollback(config, "undo", as_of="2011-06-01")
    assert served() == ["1"] * 6
