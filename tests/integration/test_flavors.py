"""Classifiers of other flavors end to end, scored by roc_auc on their probabilities.

Generated data (not the bike data): 18 months of hourly readings of a power grid feeder, a few
numeric columns, one text column and a binary label, `outage`. On `SHIFT` the feeder is rebuilt:
outages stop following wind, rain and the coast and start following load and heat, so a model
trained before then ranks the hours no better than chance (roc_auc about 0.45 instead of 0.78) and a
retrained one recovers (about 0.88). Three kinds of model go through the loop:

1. `xgboost.XGBClassifier` as a dotted class: one-hot Pipeline, logged as scikit-learn, trained
   through the packaged MLproject, then monitored and backtested;
2. a factory returning a bare `lightgbm.LGBMClassifier`: logged with the lightgbm flavor;
3. a custom `mlflow.pyfunc.PythonModel` from the user's own MLproject, whose `predict` returns
   `prediction` and `probability` columns: the gate's roc_auc comes from that column.

Every gate number is recomputed here independently from the registered model and the holdout rows.
"""

from __future__ import annotations

import json
import math
from importlib.metadata import packages_distributions, version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from mlflow_retrain.base import tags as T
from mlflow_retrain.cli import cli
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.adapters.registry import Registry

SHIFT = pd.Timestamp("2022-10-01")
BOOTSTRAP, LATER = "2022-06-30", "2023-01-31"  # before the rebuild; four months after it
NUMERIC = ["temperature_c", "wind_kmh", "rain_mm", "load_pct"]


def outages(start: str = "2022-01-01", end: str = "2023-06-30 23:00", *, seed: int = 7) -> pd.DataFrame:
    """Hourly feeder readings and whether the hour had an outage (about one hour in five)."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, end, freq="h")
    n = len(ts)
    hour, doy = ts.hour.to_numpy(), ts.dayofyear.to_numpy()
    temperature = (12 - 10 * np.cos(2 * np.pi * (doy - 15) / 365.25) - 4 * np.cos(2 * np.pi * (hour - 3) / 24)
                   + rng.normal(0, 3, n))
    wind = rng.gamma(2.0, 8.0, n)
    rain = np.where(rng.random(n) < 0.25, rng.exponential(2.0, n), 0.0)
    load = 60 + 15 * np.exp(-0.5 * ((hour - 18) / 3) ** 2) + rng.normal(0, 10, n)
    region = rng.choice(["north", "south", "coast"], size=n, p=[0.4, 0.35, 0.25])
    coast = region == "coast"
    overhead_lines = -2.0 + 0.10 * (wind - 16) + 0.5 * rain + 1.2 * coast
    overloaded_cables = -2.0 + 0.12 * (load - 65) + 0.12 * (temperature - 12) - 1.2 * coast - 0.06 * (wind - 16)
    logit = np.where(ts >= SHIFT, overloaded_cables, overhead_lines)
    outage = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"), "temperature_c": temperature.round(1),
                         "wind_kmh": wind.round(1), "rain_mm": rain.round(2), "load_pct": load.round(1),
                         "region": region, "outage": outage})


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return outages()


def write_policy(folder: Path, frame: pd.DataFrame, name: str, **training) -> Path:
    frame.to_csv(folder / "outages.csv", index=False)
    data = {"path": "outages.csv", "timestamp": "timestamp", "target": "outage"}
    if "exclude" in training:
        data["exclude"] = training.pop("exclude")
    path = folder / "retrain.yaml"
    path.write_text(yaml.safe_dump({
        "model_name": name, "experiment": name, "task": "classification", "data": data,
        "training": {"window": "90d", "holdout": "14d", **training},
        "monitoring": {"window": "7d", "metric": "roc_auc"},
        "triggers": {"metric_threshold": {"min": 0.65}, "cooldown": "7d"},
        "validation": {"min_metric": 0.7, "min_improvement": 0.0},
    }, sort_keys=False))
    return path


def invoke(*args: str) -> tuple[int, dict]:
    out = CliRunner().invoke(cli, [*args, "--json"])
    assert out.exit_code in (0, 4), out.output  # 4: monitoring found downtime, still a report
    return out.exit_code, json.loads(out.output)


def cycle(policy: Path, *args: str) -> dict:
    code, report = invoke("cycle", "--config", str(policy), *args)
    assert code == 0, report
    return report


def holdout_rows(frame: pd.DataFrame, as_of: str, days: int = 14) -> pd.DataFrame:
    stamps = pd.to_datetime(frame.timestamp)
    end = pd.Timestamp(as_of)
    return frame[(stamps > end - pd.Timedelta(days=days)) & (stamps <= end)]


def model_dir(name: str, version: str) -> Path:
    return Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))


def pinned(module: str) -> str:
    """`dist==version` of the distribution that provides `module` here (xgboost-cpu for xgboost)."""
    dist = packages_distributions()[module][0]
    return f"{dist}=={version(dist)}"


def assert_retrained_and_judged(report: dict, policy: Path) -> dict:
    """The later cycle saw the stale model fail the threshold, retrained, and promoted with roc_auc."""
    assert report["retrain"]["fired"] == ["metric_threshold"], report
    assert "< min 0.65" in report["retrain"]["reason"]
    gate = report["promotion"]
    assert gate["metric"] == "roc_auc" and 0.5 < gate["candidate"] <= 1.0, gate
    assert gate["baseline"] < 0.6 < 0.8 < gate["candidate"], gate  # the stale model ranks at chance
    assert report["outcome"] == T.PROMOTED and gate["promote"], report["reason"]
    assert any("is above the limit 0.7" in r for r in gate["reasons"]), gate["reasons"]
    # the audit run holds the gate's numbers, apart from the monitoring series (`monitor_roc_auc`)
    metrics = MlflowClient().get_run(report["cycle_run_id"]).data.metrics
    assert metrics["holdout_candidate_roc_auc"] == pytest.approx(gate["candidate"])
    assert metrics["holdout_production_roc_auc"] == pytest.approx(gate["baseline"])
    version = Registry(load_config(policy)).get(report["candidate_version"])
    assert version.stage == "Production" and version.tags[T.DECISION] == T.PROMOTED
    assert version.tags[T.TRIGGER] == "metric_threshold" and "roc_auc" in version.tags[T.DECISION_REASON]
    return gate


def test_xgboost_by_class_name_through_the_packaged_project_then_monitored_and_backtested(
        store: str, tmp_path: Path, frame: pd.DataFrame):
    policy = write_policy(tmp_path, frame, "outages-xgb", estimator="xgboost.XGBClassifier",
                          params={"n_estimators": 30, "max_depth": 3, "learning_rate": 0.3, "n_jobs": 1})
    first = cycle(policy, "--as-of", BOOTSTRAP)  # the default --retrain-via project: a subprocess
    assert first["outcome"] == T.PROMOTED and first["candidate_version"] == "1", first
    v1 = Registry(load_config(policy)).get("1")
    assert MlflowClient().get_run(v1.run_id).data.tags["mlflow.project.entryPoint"] == "train"

    gate = assert_retrained_and_judged(cycle(policy, "--as-of", LATER), policy)
    # the gate's number, recomputed from the registered model's own predict_proba on the holdout
    rows = holdout_rows(frame, LATER)
    model = mlflow.sklearn.load_model("models:/outages-xgb/2")
    assert type(model[-1]).__name__ == "XGBClassifier"  # in the one-hot Pipeline, logged as scikit-learn
    proba = model.predict_proba(rows[[*NUMERIC, "region"]])[:, 1]
    assert gate["candidate"] == pytest.approx(roc_auc_score(rows.outage, proba))

    folder = model_dir("outages-xgb", "2")
    assert set(Model.load(folder).flavors) == {"python_function", "sklearn"}
    requirements = (folder / "requirements.txt").read_text().split()
    assert pinned("xgboost") in requirements and pinned("sklearn") in requirements, requirements

    _, monitored = invoke("monitor", "--config", str(policy), "--from", "2022-07-01", "--out",
                          str(tmp_path / "monitor"))
    windows = [w for w in monitored["windows"] if w["rows"]]
    assert len(windows) > 25 and all(0.0 <= w["metric"] <= 1.0 for w in windows), windows  # a week has both
    before = [w["metric"] for w in windows if w["end"] <= str(SHIFT)]
    after = [w["metric"] for w in windows if str(SHIFT) <= w["start"] and w["version"] == "1"]
    assert np.median(before) > 0.7 > 0.55 > np.median(after), (np.median(before), np.median(after))
    assert {w["version"] for w in windows} == {"1", "2"}
    assert np.median([w["metric"] for w in windows if w["version"] == "2"]) > 0.75

    code, backtest = invoke("backtest", "--config", str(policy), "--from", BOOTSTRAP, "--every", "14d",
                            "--policy", "never,configured", "--out", str(tmp_path / "backtest"))
    assert code == 0
    # and the schedule of the configured policy's budget, and the walk-forward rule (out of sample)
    table = {row["policy"]: row for row in backtest["policies"] if row["family"] in ("never", "configured")}
    assert set(table) == {"never", "configured"}
    assert all(math.isfinite(row["mean_metric"]) for row in table.values()), table
    assert table["never"]["retrains"] == 0 and table["configured"]["retrains"] >= 1
    assert table["configured"]["mean_metric"] > table["never"]["mean_metric"] + 0.1, table  # higher is better


def one_class(frame: pd.DataFrame, start: str, end: str) -> bool:
    stamps = pd.to_datetime(frame.timestamp)
    return frame[(stamps > pd.Timestamp(start)) & (stamps <= pd.Timestamp(end))].outage.nunique() == 1


def test_a_window_with_one_class_is_a_gap_not_a_crash(store: str, tmp_path: Path, frame: pd.DataFrame):
    policy = write_policy(tmp_path, frame, "outages-daily", estimator="xgboost.XGBClassifier",
                          params={"n_estimators": 30, "max_depth": 3, "n_jobs": 1})
    raw = yaml.safe_load(policy.read_text())
    policy.write_text(yaml.safe_dump({**raw, "monitoring": {**raw["monitoring"], "window": "1d"}}))
    assert cycle(policy, "--as-of", BOOTSTRAP, "--retrain-via", "inprocess")["outcome"] == T.PROMOTED
    # no outage in the day to 2022-11-09: a daily window has one class there (a week always has both)
    assert one_class(frame, "2022-11-08", "2022-11-09")
    _, monitored = invoke("monitor", "--config", str(policy), "--from", "2022-11-05", "--to", "2022-11-11",
                          "--out", str(tmp_path / "monitor"))
    gaps = [w for w in monitored["windows"] if one_class(frame, w["start"], w["end"])]
    assert gaps and all(w["metric"] is None for w in gaps)
    assert all(0.0 <= w["metric"] <= 1.0 for w in monitored["windows"] if w not in gaps)
    _, checked = invoke("check", "--config", str(policy), "--as-of", "2022-11-09")
    assert checked["monitoring"][-1]["metric"] is None
    _, replay = invoke("backtest", "--config", str(policy), "--from", "2022-11-01", "--to", "2022-11-12",
                       "--policy", "never", "--out", str(tmp_path / "backtest"))
    assert math.isfinite(replay["policies"][0]["mean_metric"])


LIGHTGBM_FACTORY = '''\
"""The grid team's model: LightGBM on the numeric readings, few rounds."""
import lightgbm


def outage_model(n_estimators: int = 30, num_leaves: int = 15):
    return lightgbm.LGBMClassifier(n_estimators=n_estimators, num_leaves=num_leaves, random_state=0, n_jobs=1,
                                   verbose=-1)
'''


def test_lightgbm_from_a_factory_is_logged_with_its_own_flavor(store: str, tmp_path: Path, frame: pd.DataFrame):
    (tmp_path / "grid_models.py").write_text(LIGHTGBM_FACTORY)
    policy = write_policy(tmp_path, frame, "outages-lgbm", estimator="grid_models:outage_model",
                          params={"n_estimators": 30}, exclude=["region"])
    assert cycle(policy, "--as-of", BOOTSTRAP, "--retrain-via", "inprocess")["outcome"] == T.PROMOTED
    report = cycle(policy, "--as-of", LATER, "--retrain-via", "inprocess")
    gate = assert_retrained_and_judged(report, policy)

    folder = model_dir("outages-lgbm", "2")
    meta = Model.load(folder)
    assert set(meta.flavors) == {"python_function", "lightgbm"}, meta.flavors
    assert [c["name"] for c in meta.signature.inputs.to_dict()] == NUMERIC  # region excluded
    assert pinned("lightgbm") in (folder / "requirements.txt").read_text().split()
    model = mlflow.lightgbm.load_model("models:/outages-lgbm/2")
    assert type(model).__name__ == "LGBMClassifier"  # the sklearn API object, so predict_proba
    rows = holdout_rows(frame, LATER)
    assert gate["candidate"] == pytest.approx(roc_auc_score(rows.outage, model.predict_proba(rows[NUMERIC])[:, 1]))


USER_MLPROJECT = """\
name: grid-outages
entry_points:
  train:
    parameters:
      data_path: string
      train_start: string
      train_end: string
      holdout_start: {type: string, default: ""}
      holdout_end: {type: string, default: ""}
      as_of: {type: string, default: ""}
      cycle_run_id: {type: string, default: ""}
      C: {type: float, default: 1.0}
    command: >-
      python train.py --data-path {data_path} --train-start {train_start} --train-end {train_end} --C {C}
"""

USER_TRAIN = '''\
"""The grid team's script: a logistic risk score served as a custom pyfunc with its probability."""
import argparse

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

COLUMNS = ["temperature_c", "wind_kmh", "rain_mm", "load_pct", "region"]


class OutageRisk(mlflow.pyfunc.PythonModel):
    """Answers with the predicted label and the probability of an outage, as columns."""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def predict(self, context, model_input, params=None):
        probability = self.pipeline.predict_proba(model_input[COLUMNS])[:, 1]
        return pd.DataFrame({"prediction": (probability >= 0.5).astype(int), "probability": probability})


def main():
    parser = argparse.ArgumentParser()
    for name in ("--data-path", "--train-start", "--train-end"):
        parser.add_argument(name, required=True)
    parser.add_argument("--C", type=float, default=1.0)
    args = parser.parse_args()
    frame = pd.read_csv(args.data_path)
    stamps = pd.to_datetime(frame["timestamp"])
    rows = frame[(stamps > pd.Timestamp(args.train_start)) & (stamps <= pd.Timestamp(args.train_end))]
    encode = ColumnTransformer([("region", OneHotEncoder(handle_unknown="ignore"), ["region"])],
                               remainder=StandardScaler())
    pipeline = Pipeline([("encode", encode), ("model", LogisticRegression(C=args.C, max_iter=500))])
    pipeline.fit(rows[COLUMNS], rows["outage"])
    model = OutageRisk(pipeline)
    with mlflow.start_run():
        mlflow.log_params({"C": args.C, "train_rows": len(rows)})
        example = rows[COLUMNS].head(50)
        mlflow.pyfunc.log_model(name="model", python_model=model,
                                signature=infer_signature(example, model.predict(None, example)),
                                pip_requirements=["scikit-learn", "pandas"])


if __name__ == "__main__":
    main()
'''


def test_a_custom_pyfunc_from_the_users_project_is_judged_on_its_probability_column(
        store: str, tmp_path: Path, frame: pd.DataFrame):
    project = tmp_path / "grid-project"
    project.mkdir()
    (project / "MLproject").write_text(USER_MLPROJECT)
    (project / "train.py").write_text(USER_TRAIN)
    policy = write_policy(tmp_path, frame, "outages-pyfunc",
                          project={"uri": "grid-project", "entry_point": "train", "parameters": {"C": 0.5}})
    first = cycle(policy, "--as-of", BOOTSTRAP)
    assert first["outcome"] == T.PROMOTED and first["candidate_version"] == "1", first
    gate = assert_retrained_and_judged(cycle(policy, "--as-of", LATER), policy)

    version = Registry(load_config(policy)).get("2")
    run = MlflowClient().get_run(version.run_id)
    assert run.data.params["C"] == "0.5" and run.data.tags["mlflow.project.entryPoint"] == "train"
    folder = model_dir("outages-pyfunc", "2")
    assert set(Model.load(folder).flavors) == {"python_function"}  # no native flavor: scored through pyfunc
    output = mlflow.pyfunc.load_model("models:/outages-pyfunc/2").predict(holdout_rows(frame, LATER)[
        [*NUMERIC, "region"]])
    assert list(output.columns) == ["prediction", "probability"]
    rows = holdout_rows(frame, LATER)
    assert gate["candidate"] == pytest.approx(roc_auc_score(rows.outage, output["probability"]))
    # the labels alone would give another number: the gate ranked by the probabilities
    assert gate["candidate"] != pytest.approx(roc_auc_score(rows.outage, output["prediction"]))
