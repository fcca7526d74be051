"""`mlflow run <repo> -e train|evaluate --env-manager local`: the MLproject is the real contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]


def mlflow_run(entry: str, params: dict[str, str], tracking_uri: str) -> subprocess.CompletedProcess:
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow_cli), "run", str(REPO), "-e", entry, "--env-manager", "local", "--experiment-name", "bikes"]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_train_and_evaluate_entry_points(store, write_policy, tmp_path):
    config = str(write_policy())
    trained = mlflow_run("train", {"config": config, "as_of": "2011-04-30"}, store)
    assert trained.returncode == 0, trained.stderr[-2000:]
    client = MlflowClient()
    version = client.get_model_version("bikes", "1")
    assert version.current_stage == "Production" and version.tags["retrain.trigger"] == "bootstrap"
    assert client.get_run(version.run_id).data.tags["mlflow.project.entryPoint"] == "train"

    out_dir = tmp_path / "reports"
    evaluated = mlflow_run("evaluate", {"config": config, "as_of": "2011-06-30", "out_dir": str(out_dir)}, store)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    runs = client.search_runs([client.get_experiment_by_name("bikes").experiment_id],
                              "tags.`mlflow.project.entryPoint` = 'evaluate'")
    assert len(runs) == 1 and runs[0].data.metrics["mae"] > 0 and "drift_share" in runs[0].data.metrics
    reports = {a.path for a in client.list_artifacts(runs[0].info.run_id, "reports")}
    assert reports == {"reports/data_drift.html", "reports/model_quality.html"}
    assert (out_dir / "data_drift.html").stat().st_size > 100_000
