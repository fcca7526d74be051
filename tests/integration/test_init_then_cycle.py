"""`init` on a dataset that is not the bikes, then `cycle` with the written file as is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

import inprocess_cli
from growing import growing_demand
from mlflow_retrain.cli import cli
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.adapters.registry import story


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
    # init's policy refits a candidate that passed (training.refit_on_pass): v2 was judged, v3 serves
    production = MlflowClient().get_latest_versions("store-demand", stages=["Production"])
    assert [str(v.version) for v in production] == ["3"] and story.record_in(production[0].description)["retrain.refit_of"]

    again = runner.invoke(cli, ["init", "--data", str(data), "--target", "units"])
    assert again.exit_code == 2 and again.output == "error: retrain.yaml exists; pass --force to overwrite it\n"


def test_init_calibrates_on_growing_demand_then_cycles_promote_the_first_model_and_a_later_better_one(store,
                                                                                                   tmp_path):
    """Issue 25: a gate from the target's spread rejected a new user's first model and, once the level
    grew, a candidate that beat Production. Calibrated on the model's walk-forward errors and relative
    to the naive baseline on the same holdout, both pass; the row counter is left out, and said."""
    data = tmp_path / "data"
    data.mkdir()
    growing_demand(days=200).to_csv(data / "demand.csv", index=False)
    made = inprocess_cli.run(["init", "--data", "data/demand.csv", "--target", "demand", "--model-name", "growing"])
    assert made.returncode == 0, made.stderr
    assert made.stderr.count("'rownames' left out of the features") == 1, made.stderr
    policy = load_config(tmp_path / "retrain.yaml")
    assert policy.data.exclude == ("rownames",) and policy.validation.max_ratio_to_naive is not None
    assert policy.validation.max_metric is not None and policy.metric == "mae"

    def cycle(as_of: str) -> dict:
        done = inprocess_cli.run(["cycle", "--config", "retrain.yaml", "--retrain-via", "inprocess", "--as-of", as_of,
                                  "--json"])
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    first = cycle("2024-03-15")
    assert first["outcome"] == "promoted" and first["candidate_version"] == "1"  # the bootstrap passes the gate
    later = cycle("2024-07-10")  # the level grew ~50% past anything v1 saw: v1 degrades
    # v2 passed the gate; init's policy refits it through as_of (training.refit_on_pass): v3 serves
    assert later["retrain"]["fired"] and later["outcome"] == "promoted" and later["candidate_version"] == "3"
    reasons = later["promotion"]["reasons"]
    naive = next(r for r in reasons if r.startswith("naive gate: "))
    assert naive.endswith("(pass)") and f"{policy.validation.max_ratio_to_naive:g}x the naive baseline's" in naive
    # the absolute limit alone would not have judged the level the target grew to: the ratio did
    assert later["promotion"]["candidate"] < policy.validation.max_metric
    production = MlflowClient().get_latest_versions("growing", stages=["Production"])
    assert [str(v.version) for v in production] == ["3"]
