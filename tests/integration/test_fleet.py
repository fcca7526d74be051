"""A fleet on a real sqlite store: generated load data for a few small models (Ridge), policies in a
folder (one alone, two in a fleet file sharing defaults), run through the real CLI and its real pool
of worker processes.

The scenario runs as one story to stay quick (the models are bootstrapped once): bootstrap (while a
fourth model's training kills its worker process), no-op, a broken policy beside the others, tag
selection, the dashboard. A model named by two policies is refused before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from synthetic import TARGET, energy_load

from mlflow_retrain.cli import cli
from mlflow_retrain.fleet import work
from mlflow_retrain.fleet.policies import read_members
from mlflow_retrain.fleet.task import Task

BOOTSTRAP, LATER = "2022-02-28", "2022-03-07"
SHARED = {"data": {"timestamp": "timestamp", "target": TARGET},
          "training": {"estimator": "sklearn.linear_model.Ridge", "window": "30d", "holdout": "7d"},
          "monitoring": {"window": "7d", "reports": "never"},
          "triggers": {"metric_threshold": {"max": 500}},
          "validation": {"max_metric": 1000}}
# a training factory that dies as a native crash or the OOM killer would: SIGKILL, no cleanup
KILLER = "import os, signal\n\n\ndef make():\n    os.kill(os.getpid(), signal.SIGKILL)\n"


def policy(name: str, data: str, **extra) -> dict:
    return {"model_name": name, **{k: dict(v) for k, v in SHARED.items()}, "data": {**SHARED["data"], "path": data},
            **extra}


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    """policies/north.yaml alone; policies/regions.yaml a fleet file with south and east."""
    data = tmp_path / "data"
    data.mkdir()
    for seed, region in enumerate(["north", "south", "east"]):
        energy_load("2022-01-01", "2022-03-10", seed=seed).to_csv(data / f"{region}.csv", index=False)
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "north.yaml").write_text(yaml.safe_dump(policy("load-north", "../data/north.csv")))
    (folder / "regions.yaml").write_text(yaml.safe_dump({
        "defaults": {k: v for k, v in SHARED.items()},
        "models": [{"model_name": "load-south", "data": {"path": "../data/south.csv"}},
                   {"model_name": "load-east", "data": {"path": "../data/east.csv"}}]}))
    return folder


def crash_policy(tmp_path: Path) -> Path:
    """A fourth model's policy (tmp_path/crash/crash.yaml) whose training kills its worker process."""
    crash = tmp_path / "crash"
    crash.mkdir(exist_ok=True)
    (crash / "killer.py").write_text(KILLER)
    (crash / "crash.yaml").write_text(yaml.safe_dump(policy(
        "load-crash", str(tmp_path / "data" / "north.csv"), training={**SHARED["training"], "estimator": "killer:make"})))
    return crash / "crash.yaml"


def fleet(*args: str, code: int = 0) -> tuple[dict, str]:
    out = CliRunner().invoke(cli, ["fleet", *args, "--json"])
    assert out.exit_code == code, out.output
    return json.loads(out.stdout), out.stderr


def by_model(result: dict) -> dict[str, dict]:
    return {row["model"]: row for row in result["models"]}


def test_a_fleet_bootstraps_then_idles_and_one_model_never_stops_the_others(store, fleet_dir, tmp_path):
    # bootstrap, while a fourth model's training kills its worker: that model is `crashed`, exit 1
    first, _ = fleet("cycle", "--policies", str(fleet_dir), "--policies", str(crash_policy(tmp_path)),
                     "--as-of", BOOTSTRAP, "--retrain-via", "inprocess", "--jobs", "2", code=1)
    rows = by_model(first)
    assert [r["policy"] for r in first["models"]] == [
        str(fleet_dir / "north.yaml"), f"{fleet_dir / 'regions.yaml'} models[0]", f"{fleet_dir / 'regions.yaml'} models[1]",
        str(crash_policy(tmp_path))]
    assert rows["load-crash"]["outcome"] == "crashed" and rows["load-crash"]["exit_code"] == 1
    for name in ("load-north", "load-south", "load-east"):
        assert rows[name]["outcome"] == "promoted" and rows[name]["production"] == "1", rows[name]
    client = MlflowClient()
    assert {m.name for m in client.search_registered_models() if not m.name.endswith("lease")} >= {
        "load-north", "load-south", "load-east"}

    # a week later: nothing to do; the table says each model's Production, its age and newest error
    out = CliRunner().invoke(cli, ["fleet", "cycle", "--policies", str(fleet_dir), "--as-of", LATER])
    assert out.exit_code == 0, out.output
    header = out.stdout.splitlines()[0].split()
    assert header == ["model", "production", "age", "last_metric", "decision", "reason"]
    lines = out.stdout.splitlines()
    assert [line.split()[5] for line in lines[2:5]] == ["no_retrain"] * 3  # model v1 7d mae N decision
    assert lines[6].startswith("3 model(s) in") and lines[6].endswith("3 no_retrain; exit 0")
    idle, _ = fleet("check", "--policies", str(fleet_dir), "--as-of", LATER)
    for row in idle["models"]:
        assert (row["outcome"], row["production"], row["age"], row["exit_code"]) == ("no_retrain", "1", "7d", 0)
        assert row["metric"] == "mae" and 0 < row["last_metric"] < 500 and "no trigger fired" in row["reason"]

    # the same no-op cycles as a worker runs them, here: the rows the pool printed, and the lease searches
    # the registry 6 times a cycle (it searched 10: its sweep read again what it had just read)
    searches, search = [], MlflowClient.search_registered_models
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MlflowClient, "search_registered_models",
                      lambda self, *a, **k: searches.append(a) or search(self, *a, **k))
        again = [work.run(Task("cycle", m, dict(os.environ), {}, as_of=LATER)).to_dict()
                 for m in read_members([fleet_dir])]
    same = ("model", "outcome", "reason", "production", "age", "age_days", "metric", "last_metric", "exit_code")
    assert [{k: r[k] for k in same} for r in again] == [{k: r[k] for k in same} for r in idle["models"]]
    assert len(searches) == 6 * len(again), searches

    # a broken policy beside them: its one line, exit 2; the others still run
    (fleet_dir / "west.yaml").write_text(yaml.safe_dump(policy("load-west", "../data/north.csv",
                                                               training={"window": "30x"})))
    broken, stderr = fleet("status", "--policies", str(fleet_dir), code=2)
    rows = by_model(broken)
    assert rows["load-west"]["outcome"] == "error" and rows["load-west"]["exit_code"] == 2
    assert rows["load-west"]["reason"].startswith(f"{fleet_dir / 'west.yaml'}: training.window")
    assert "\n" not in rows["load-west"]["reason"]
    assert all(rows[m]["outcome"] == "no_retrain" for m in ("load-north", "load-south", "load-east"))
    assert "error: 1 of 4 model(s) did not succeed, first load-west" in stderr
    (fleet_dir / "west.yaml").unlink()

    # a team enrols a model by tagging its registered model (as in the MLflow UI)
    for name in ("load-north", "load-east"):
        client.set_registered_model_tag(name, "retrain.enabled", "True")
    chosen, _ = fleet("status", "--policies", str(fleet_dir), "--select", "retrain.enabled=true")
    assert sorted(by_model(chosen)) == ["load-east", "load-north"] and chosen["not_selected"] == ["load-south"]

    # the fleet's dashboard: one row per model, each linking to the model's own dashboard
    out_dir = tmp_path / "fleet-monitor"
    watched, _ = fleet("monitor", "--policies", str(fleet_dir), "--out", str(out_dir))
    page = Path(watched["dashboard"]).read_text()
    assert Path(watched["dashboard"]) == out_dir / "dashboard.html"
    for row in watched["models"]:
        own = Path(row["dashboard"])
        assert own.is_file() and own.parent.parent == out_dir
        assert f'href="{own.parent.name}/dashboard.html"' in page and row["outcome"] == "healthy"
    assert "plotly" in page.lower() and page.count("<tr>") == 4  # header + 3 models


def test_two_policies_naming_one_model_are_refused_before_anything_runs(store, fleet_dir):
    (fleet_dir / "copy.yaml").write_text(yaml.safe_dump(policy("load-south", "../data/south.csv")))
    db = Path(store.removeprefix("sqlite:///"))
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    out = CliRunner().invoke(cli, ["fleet", "cycle", "--policies", str(fleet_dir), "--retrain-via", "inprocess"])
    assert out.exit_code == 2
    assert out.stderr.strip().splitlines() == [
        (f"error: registered model 'load-south' is named by 2 policies: {fleet_dir / 'copy.yaml'}, "
         f"{fleet_dir / 'regions.yaml'} models[0]; one policy per model")]
    assert out.stdout == "" and hashlib.sha256(db.read_bytes()).hexdigest() == before
