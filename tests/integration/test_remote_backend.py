"""Training elsewhere: `training.project.backend` names an MLflow project backend, and the controller
(`mlflow-retrain cycle`, run in-process as a process of its own runs it) hands it the project, the data-time contract and the
backend config, waits for its run, then registers and judges the model as for a local run.

No Kubernetes cluster, docker daemon or Databricks workspace is here, so the cluster is a stand-in:
a real MLflow project backend plugin (entry point group `mlflow.project_backend`, the group
`mlflow run --backend NAME` loads), installed as a distribution on PYTHONPATH. Each run is a job of
its own: a copy of the project in a folder of the "cluster", a process of its own, its output in the
job's log. It records what it was handed. What MLflow's own kubernetes backend needs is checked in
tests/unit/test_backends.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import inprocess_cli
import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from test_own_model import BOOTSTRAP, LATER, audit_runs, registry_state, user_folder

from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.config import CONTRACT
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.base.errors import TrainingError
from mlflow_retrain.adapters.registry import Registry
from mlflow_retrain.adapters.trainers import run_project, trainer

STANDIN = '''
"""A stand-in for a training cluster, as an MLflow project backend plugin."""
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from mlflow.entities import RunStatus
from mlflow.projects.backend.abstract_backend import AbstractBackend
from mlflow.projects.submitted_run import SubmittedRun
from mlflow.projects.utils import (fetch_and_validate_project, get_entry_point_command, get_or_create_run,
                                   get_run_env_vars, load_project)


class Job(SubmittedRun):
    def __init__(self, run_id, process, folder):
        super().__init__()
        self._run_id, self.process, self.folder = run_id, process, folder

    @property
    def run_id(self):
        return self._run_id

    def wait(self):
        code = self.process.wait()
        print(f"job {self.folder.name}: exit code {code}, log {self.folder / 'job.log'}")  # what the scheduler says
        return code == 0

    def get_status(self):
        code = self.process.poll()
        status = RunStatus.RUNNING if code is None else RunStatus.FINISHED if code == 0 else RunStatus.FAILED
        return RunStatus.to_string(status)

    def cancel(self):
        self.process.kill()
        self.process.wait()


class StandIn(AbstractBackend):
    def run(self, project_uri, entry_point, params, version, backend_config, tracking_uri, experiment_id):
        work_dir = fetch_and_validate_project(project_uri, version, entry_point, params)
        project = load_project(work_dir)
        cluster = Path(backend_config["cluster"])
        run = get_or_create_run(None, project_uri, experiment_id, work_dir, version, entry_point, params)
        cluster.mkdir(exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="job-", dir=cluster))
        shutil.copytree(work_dir, folder / "project")
        received = {"run_id": run.info.run_id, "entry_point": entry_point, "params": params,
                    "backend_config": backend_config, "tracking_uri": tracking_uri, "job": str(folder)}
        (cluster / "received.json").write_text(json.dumps(received, default=str))
        if backend_config.get("evicted"):
            command = "exit 137"  # the node went away before the entry point started: nobody ends the run
        else:
            command = " ".join(get_entry_point_command(project, entry_point, params, str(folder / "storage")))
        env = {**os.environ, **get_run_env_vars(run.info.run_id, experiment_id), "MLFLOW_TRACKING_URI": tracking_uri}
        with open(folder / "job.log", "w") as log:
            process = subprocess.Popen(command, shell=True, cwd=folder / "project", env=env, stdout=log,
                                       stderr=subprocess.STDOUT)
        return Job(run.info.run_id, process, folder)
'''


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plugin as pip would leave it: a module and its distribution's metadata, in a folder of its
    own, on this process's path (the test reads the policy too) and the CLI's PYTHONPATH."""
    site = tmp_path / "site"
    dist = site / "standin_backend-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "standin_backend.py").write_text(STANDIN)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: standin-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mlflow.project_backend]\nstandin = standin_backend:StandIn\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def remote_policy(folder: Path, name: str, **backend_config) -> Path:
    """The energy-load project's policy, training on the stand-in with this backend config."""
    (folder / f"{name}.json").write_text(json.dumps(backend_config))
    raw = yaml.safe_load((folder / "retrain-project.yaml").read_text())
    raw["training"]["project"].update(backend="standin", backend_config=f"{name}.json", parameters={"max_iter": 80})
    policy = folder / f"{name}.yaml"
    policy.write_text(yaml.safe_dump(raw))
    return policy


def cycle(site: Path, policy: Path, *args: str) -> inprocess_cli.Done:
    """The controller, run in this process as its own process would run it (the plugin is on this
    process's path, as PYTHONPATH puts it on a process's); the jobs it hands out are processes."""
    env = {**os.environ, "PYTHONPATH": str(site)}  # the store fixture's MLFLOW_TRACKING_URI is inherited
    return inprocess_cli.run(["cycle", "--config", str(policy), *args], env=env)


def received(cluster: Path) -> dict:
    return json.loads((cluster / "received.json").read_text())


def test_a_project_trains_on_a_plugin_backend_and_a_failed_remote_run_is_one_line(store, standin, tmp_path):
    folder, cluster = user_folder(tmp_path), tmp_path / "cluster"
    ours = {"cluster": str(cluster), "queue": "gpu-small", "evicted": False}
    policy = remote_policy(folder, "remote", **ours)
    config = load_config(policy)

    # the first model, trained on the "cluster"
    done = cycle(standin, policy, "--as-of", BOOTSTRAP, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report, job = json.loads(done.stdout), received(cluster)
    assert report["outcome"] == T.PROMOTED and report["candidate_version"] == "1"
    first = Registry(config).get("1")
    assert first.run_id == job["run_id"] and first.stage == "Production"
    # the contract, the user's parameters and the backend config reached the backend
    start, end = first.tags[T.TRAIN_WINDOW].split("..")
    holdout_start, holdout_end = first.tags[T.HOLDOUT_WINDOW].split("..")
    assert pd.Timestamp(job["params"]["as_of"]) == pd.Timestamp(first.tags[T.AS_OF])  # (a date, as the list shows it)
    assert job["params"] == {"max_iter": "80", "as_of": job["params"]["as_of"], "train_start": start, "train_end": end,
                             "holdout_start": holdout_start, "holdout_end": holdout_end,
                             "cycle_run_id": report["cycle_run_id"], "data_path": str(folder / "load.csv")}
    assert set(job["params"]) == {"max_iter", *CONTRACT}
    assert {key: job["backend_config"][key] for key in ours} == ours and job["tracking_uri"] == store
    assert job["entry_point"] == "train" and Path(job["job"]).parent == cluster
    run = MlflowClient().get_run(job["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.project.backend"] == "standin"
    assert run.data.params["train_start"] == start and run.data.params["train_rows"]  # the entry point's own
    assert (Path(job["job"]) / "job.log").is_file()  # the job ran in its own folder, its output stayed there

    # the job dies before its entry point starts: one line naming the run, nothing registered, lease free
    evicted = remote_policy(folder, "evicted", **{**ours, "evicted": True})
    before, failed = registry_state(config), audit_runs("FAILED")
    out = cycle(standin, evicted, "--as-of", LATER, "--force", "--reason", "new tariff")
    lost = received(cluster)["run_id"]
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    (line,) = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert f"the 'train' entry point of {folder} failed on backend standin (run {lost})" in line and "exit code 137" in line, line
    assert MlflowClient().get_run(lost).info.status == "FAILED"  # ended by the controller: its job could not
    assert registry_state(config) == before and audit_runs("FAILED") == failed + 1
    assert Registry(config).lease_state() is None

    # the next cycle runs: a candidate from the cluster, registered and judged against Production as usual
    done = cycle(standin, policy, "--as-of", LATER, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["retrain"]["fired"] == ["metric_threshold"] and report["outcome"] == T.PROMOTED, report
    second = Registry(config).get("2")
    assert second.run_id == received(cluster)["run_id"] != job["run_id"]
    assert second.tags[T.BASELINE_VERSION] == "1" and second.stage == "Production"
    assert report["promotion"]["candidate"] < report["promotion"]["baseline"]
    assert mlflow.search_runs(experiment_names=["energy-load"], filter_string="status = 'RUNNING'").empty

    # a backend that fails to submit (the plugin's own bug, here a key missing from its config) is one line too
    broken = load_config(remote_policy(folder, "broken", queue="gpu-small"))
    with pytest.raises(TrainingError, match=r"could not run on backend standin \(KeyError: 'cluster'\)$"):
        run_project(broken, trainer(broken), job["params"], env_manager="local")
