"""A new user's first hour: `pip install` the wheel, then init, cycle, monitor and backtest in a folder
of their own, on their own data (generated here: hourly electricity load, not the bike data).

Everything runs through the venv's `mlflow-retrain` console script in a temp folder outside the
checkout, with no MLFLOW_TRACKING_URI: the store is MLflow's default `sqlite:///mlflow.db` in that
folder. The default `--retrain-via project` runs the MLproject shipped inside the installed package
(the bootstrap trains in-process: the same installed code, one interpreter start fewer).
"""

from __future__ import annotations

import csv
import json
import subprocess
import urllib.parse
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from synthetic import SHIFT, TARGET, energy_load

from mlflow_retrain.adapters.registry import story

REPO = Path(__file__).resolve().parents[2]
DATA = "energy-load.csv"
# everything the commands below may write in the working folder
WRITES = (DATA, "retrain.yaml", "mlflow.db", "mlruns", "mlartifacts", "monitor", "backtest", "reports")


class User:
    """A shell in `folder` with the wheel venv activated."""

    def __init__(self, venv, folder: Path):
        self.venv, self.folder = venv, folder

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.venv.script("mlflow-retrain")), *args], cwd=self.folder, env=self.venv.env(),
                              capture_output=True, text=True, timeout=timeout)

    def ok(self, *args: str, timeout: float = 300) -> dict:
        """Run with --json; exit 0 and a JSON document on stdout, else fail with the tail of stderr."""
        out = self.run(*args, "--json", timeout=timeout)
        assert out.returncode == 0, f"mlflow-retrain {' '.join(args)} exited {out.returncode}:\n{out.stderr[-3000:]}"
        return json.loads(out.stdout)


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def local(uri: str) -> Path:
    """A local artifact URI (file:///... or a plain path) as a resolved path."""
    return Path(urllib.parse.urlparse(uri).path if uri.startswith("file:") else uri).resolve()


def state(path: Path) -> dict[str, int] | int | None:
    """A file's mtime, a folder's files and their mtimes, or None when it does not exist."""
    if path.is_dir():
        return snapshot(path)
    return path.stat().st_mtime_ns if path.exists() else None


def test_wheel_install_init_cycle_monitor_backtest(wheel_venv, tmp_path):
    work = tmp_path.resolve() / "energy"
    work.mkdir()
    assert REPO not in work.parents
    energy_load().to_csv(work / DATA, index=False)
    user = User(wheel_venv, work)
    repo_before = {name: state(REPO / name) for name in WRITES if name != "mlruns"}
    package_before = snapshot(wheel_venv.package_dir)

    # the policy file comes from the data: timestamp detected, features from dtypes, windows and thresholds
    policy = user.ok("init", "--data", DATA, "--target", TARGET)
    assert policy["timestamp"] == "timestamp" and policy["task"] == "regression"
    assert set(policy["categorical"]) == {"day_type", "weather"}
    model = yaml.safe_load((work / "retrain.yaml").read_text())["model_name"]
    assert model == policy["model_name"]

    # bootstrap in this process (the installed `train` code; it saves a second interpreter's imports)
    first = user.ok("cycle", "--as-of", "2022-06-30", "--retrain-via", "inprocess")
    assert first["outcome"] == "promoted" and first["candidate_version"] == "1", first

    # after the shift the stale model degrades: the threshold fires and a candidate is trained, with the
    # default --retrain-via project (the MLproject inside the package), and judged
    later = user.ok("cycle", "--as-of", "2023-03-31")
    assert later["production_version"] == "1"
    fired = [t["kind"] for t in later["retrain"]["results"] if t["fired"]]
    assert "metric_threshold" in fired, later["retrain"]
    # init's policy refits a candidate that passed (training.refit_on_pass): the refit is the next version
    made = 2 if later["outcome"] == "promoted" else 1
    assert later["outcome"] in {"promoted", "rejected"} and later["candidate_version"] == str(1 + made), later

    # a requested retrain happens whatever the triggers say, and is judged like any other
    forced = user.ok("cycle", "--force", "--reason", "tariff change announced", "--as-of", "2023-06-30")
    made += 2 if forced["outcome"] == "promoted" else 1
    assert forced["outcome"] in {"promoted", "rejected"} and forced["candidate_version"] == str(1 + made), forced

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    assert len(client.get_latest_versions(model, ["Production"])) == 1
    candidate = client.get_model_version(model, forced["candidate_version"])
    assert "on_demand" in candidate.tags["retrain.trigger"].split(",")
    assert candidate.tags["retrain.decision"] == forced["outcome"]
    record = story.record_in(candidate.description)  # the values a tag would cut short in the versions list
    assert record["retrain.reason"].endswith("tariff change announced")
    assert record["retrain.baseline_version"] == forced["production_version"]
    # the candidates after the bootstrap were trained by the project inside the installed package
    for version in map(str, range(2, 2 + made)):
        tags = client.get_run(client.get_model_version(model, version).run_id).data.tags
        assert tags["mlflow.project.entryPoint"] == "train"
        assert Path(tags["mlflow.source.name"]).resolve() == wheel_venv.package_dir / "project"
    assert not (work / "MLproject").exists()

    monitored = user.ok("monitor", "--out", "monitor")
    assert (work / "monitor" / "dashboard.html").stat().st_size > 10_000
    with (work / "monitor" / "monitor.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(monitored["windows"]) > 70  # weekly, mid 2022 to the end of 2023
    assert not monitored["health"], monitored["health"]
    before = [w["metric"] for w in monitored["windows"] if w["end"] <= SHIFT.isoformat() and w["metric"]]
    after = [w["metric"] for w in monitored["windows"] if w["start"] >= SHIFT.isoformat() and w["metric"]]
    assert before and after and sum(after) / len(after) > 2 * sum(before) / len(before)  # the shift shows

    # quarterly steps: six windows, the shift inside them (the backtest's own tests step finer)
    replay = user.ok("backtest", "--from", "2022-06-30", "--every", "90d", "--policy", "never,configured",
                     "--out", "backtest")
    table = {row["policy"]: row for row in replay["policies"]}
    assert {"never", "configured", "walk-forward"} <= set(table)  # and the equal-budget schedule, if any
    assert table["never"]["retrains"] == 0 and table["configured"]["retrains"] >= 1
    assert (work / "backtest" / "backtest.csv").is_file() and (work / "backtest" / "backtest.html").is_file()

    assert (work / "mlflow.db").is_file()  # MLflow's default store, in the user's folder
    # nothing written into the checkout or into the installed package: every artifact is in the
    # user's folder, and the checkout's files of the same names are untouched
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=10_000)
    models = client.search_logged_models(experiments)
    assert len(runs) > 5 and models
    locations = [r.info.artifact_uri for r in runs] + [m.artifact_location for m in models]
    assert all(local(uri).is_relative_to(work) for uri in locations), locations
    assert not [p for r in runs for p in REPO.glob(f"mlruns/*/{r.info.run_id}")]
    written = {p.name for p in work.iterdir()}
    assert written <= set(WRITES), written - set(WRITES)
    assert {name: state(REPO / name) for name in WRITES if name != "mlruns"} == repo_before
    assert snapshot(wheel_venv.package_dir) == package_before, "files written inside the installed package"
