"""`init` on a dataset that is not the bikes, then `cycle` with the written file as is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from mlflow_retrain.cli import cli


def demand(folder: Path) -> Path:
    """Two years of daily store demand: weekly seasonality, a region label, a promo flag, temperature,
    and a level shift on 2024-01-01. One gzipped CSV per year, as a team would drop them in a folder."""
    rng = np.random.default_rng(7)
    days = pd.date_range("2023-01-01", "2024-12-31", freq="D")
    regions = rng.choice(["north", "south", "east"], len(days))
    promo = (rng.random(len(days)) < 0.2).astype(int)  # 0/1: Evidently's reports fail on a bool column
    temperature = 12 + 10 * np.sin(2 * np.pi * days.dayofyear / 365) + rng.normal(0, 2, len(days))
    weekly = np.array([0, 5, 8, 10, 20, 45, 30])[days.dayofweek]
    level = np.where(days >= "2024-01-01", 25, 0)
    units = (100 + weekly + level + 15 * promo + 0.8 * temperature + np.select(
        [regions == "north", regions == "south"], [10, -10], 0) + rng.normal(0, 4, len(days)))
    frame = pd.DataFrame({"day": days.strftime("%Y-%m-%d"), "weekday": days.day_name(), "region": regions,
                          "promo": promo, "temperature": temperature.round(1), "units": units.round()})
    data = folder / "data"
    data.mkdir()
    for year, rows in frame.groupby(days.year):
        rows.to_csv(data / f"demand-{year}.csv.gz", index=False)
    return data


def test_init_then_cycle_without_edits(store, tmp_path):
    data = demand(tmp_path)
    runner = CliRunner()
    out = runner.invoke(cli, ["init", "--data", str(data), "--target", "units", "--model-name", "store-demand"])
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[-1] == "next: mlflow-retrain replay --config retrain.yaml"
    text = (tmp_path / "retrain.yaml").read_text()
    assert "timestamp: day" in text and "path: data\n" in text and "categorical: weekday, region" in text

    cycles = []
    for as_of in ("2023-12-15", "2024-06-30"):
        out = runner.invoke(cli, ["cycle", "--config", "retrain.yaml", "--retrain-via", "inprocess", "--as-of", as_of,
                                  "--json"])
        assert out.exit_code == 0, out.output
        cycles.append(json.loads(out.stdout))
    assert cycles[0]["outcome"] == "promoted" and cycles[0]["candidate_version"] == "1"  # bootstrap
    # the 2024 level shift lifts the MAE past 0.8 x MAD; a model retrained on it beats v1 and the MAD gate
    assert cycles[1]["retrain"]["fired"] == ["metric_threshold"] and cycles[1]["outcome"] == "promoted"
    production = MlflowClient().get_latest_versions("store-demand", stages=["Production"])
    assert [str(v.version) for v in production] == ["2"]

    again = runner.invoke(cli, ["init", "--data", str(data), "--target", "units"])
    assert again.exit_code == 2 and again.output == "error: retrain.yaml exists; pass --force to overwrite it\n"
