"""`training.project.backend`: a remote backend's files refused with one line naming the key and the
file before anything runs; plugin backends found by MLflow's entry point group; the shipped Kubernetes
example accepted."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml

from mlflow_retrain.adapters import backends
from mlflow_retrain.policy import backends as policy_backends
from mlflow_retrain.policy.parse import parse_config
from mlflow_retrain.base.errors import ConfigError, TrainingError
from mlflow_retrain.adapters.trainers import backend_config, preflight

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"model_name": "m", "data": {"path": "d.csv", "timestamp": "t", "target": "y", "features": ["a"]}}
JOB = yaml.safe_load((REPO / "examples" / "kubernetes" / "job-template.yaml").read_text())
KUBE = {"kube-job-template-path": "job.yaml", "repository-uri": "registry.example.com/team/m"}
NEW_CLUSTER = {"spark_version": "15.4.x-scala2.12", "node_type_id": "i3.xlarge", "num_workers": 2}


def policy(folder: Path, backend: str, config: str | None = "backend.json", **project) -> Path:
    path = folder / "retrain.yaml"
    spec = {"uri": ".", "backend": backend, **({"backend_config": config} if config else {}), **project}
    path.write_text(yaml.safe_dump({**MINIMAL, "training": {"project": spec}}))
    return path


def parse(path: Path):
    return parse_config(yaml.safe_load(path.read_text()), origin=str(path), source=path)


def refused(path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        parse(path)
    message = str(err.value)
    assert message.startswith(f"{path}: training.project.backend") and "\n" not in message
    return message


def with_job(**changes) -> dict:
    job = json.loads(json.dumps(JOB))
    pod = job["spec"]["template"]["spec"]
    for key, value in changes.items():
        if key == "env":
            pod["containers"][0]["env"] = value
        elif key in ("kind", "metadata"):
            job[key] = value
        elif value is None:
            pod.pop(key)
        else:
            pod[key] = value
    return job


def test_the_shipped_kubernetes_example_passes_and_mlflow_gets_its_template_as_an_absolute_path():
    # the README's layout: the policy beside the kubernetes/ folder, relative paths against the policy's folder
    source = REPO / "examples" / "retrain.yaml"
    raw = {**MINIMAL, "training": {"project": {"uri": "energy-load", "backend": "kubernetes",
                                               "backend_config": "kubernetes/backend_config.json"}}}
    config = parse_config(raw, origin=str(source), source=source)
    assert policy_backends.job_template_problem(JOB) is None
    handed = backend_config(config)
    assert handed["kube-job-template-path"] == str(REPO / "examples" / "kubernetes" / "job-template.yaml")
    assert handed["repository-uri"] == "registry.example.com/team/energy-load-training"


@pytest.mark.parametrize("name, text, message", [
    ("backend.yaml", "{}", "backend.yaml must be a .json file (MLflow reads a backend config only from a .json path)"),
    ("other.json", None, "other.json does not exist or cannot be read"),
    ("backend.json", '{"repository-uri": ', "backend.json is not valid JSON: Expecting value at line 1"),
    ("backend.json", '["kube"]', "backend.json must hold a JSON object, got list"),
    ("backend.json", json.dumps({"repository-uri": "r"}), "backend.json needs kube-job-template-path: the Kubernetes Job"),
    ("backend.json", json.dumps({"kube-job-template-path": "job.yaml"}), "backend.json needs repository-uri: the image"),
    ("backend.json", json.dumps({**KUBE, "kube-context": 3}), "kube-context must be a string"),
    ("backend.json", json.dumps({**KUBE, "kube-job-template-path": "jobs/none.yaml"}),
     "kube-job-template-path {folder}/jobs/none.yaml does not exist"),
])
def test_a_kubernetes_backend_config_that_mlflow_cannot_read_is_refused(tmp_path, name, text, message):
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(JOB))
    if text is not None:
        (tmp_path / name).write_text(text)
    assert message.format(folder=tmp_path) in refused(policy(tmp_path, "kubernetes", name))


@pytest.mark.parametrize("job, message", [
    ("kind: Job\nmetadata: [unclosed\n", "is not valid YAML"),
    (with_job(kind="Pod"), "kind must be Job, got 'Pod'"),
    (with_job(metadata={"name": "x"}), "needs metadata.namespace"),
    (with_job(containers=[]), "spec.template.spec.containers must list a container"),
    # the form MLflow's documentation shows: MLflow appends to the list and the string stays, an invalid EnvVar
    (with_job(env=["{appended with MLFLOW_TRACKING_URI, MLFLOW_RUN_ID and MLFLOW_EXPERIMENT_ID}"]),
     "containers[0].env must list {name: ..., value: ...} entries"),
    (with_job(restartPolicy=None), "restartPolicy must be Never or OnFailure"),
])
def test_a_job_template_mlflow_or_kubernetes_would_refuse_is_refused(tmp_path, job, message):
    (tmp_path / "backend.json").write_text(json.dumps(KUBE))
    (tmp_path / "job.yaml").write_text(job if isinstance(job, str) else yaml.safe_dump(job))
    found = refused(policy(tmp_path, "kubernetes"))
    assert f"training.project.backend_config backend.json kube-job-template-path {tmp_path}/job.yaml" in found
    assert message in found


@pytest.mark.parametrize("spec, message", [
    ({"existing_cluster_id": "0101-abc"}, "names existing_cluster_id, which MLflow refuses"),
    ({"num_workers": 2}, "needs a new cluster spec with a spark_version"),
    ({"new_cluster": "small"}, "needs a new cluster spec with a spark_version"),
    ({"new_cluster": NEW_CLUSTER}, None),
    ({"new_cluster": NEW_CLUSTER, "libraries": [{"pypi": {"package": "lightgbm"}}]}, None),
    (NEW_CLUSTER, None),
])
def test_databricks_needs_a_new_cluster(tmp_path, spec, message):
    (tmp_path / "backend.json").write_text(json.dumps(spec))
    path = policy(tmp_path, "databricks")
    if message is None:
        assert parse(path).training.project.backend == "databricks"
    else:
        assert message in refused(path)


def test_a_remote_backend_needs_a_config_and_a_plugin_backend_is_found_by_mlflows_entry_point_group(
        tmp_path, monkeypatch):
    assert "training.project.backend_config is required for backend kubernetes" in refused(
        policy(tmp_path, "kubernetes", None))
    assert ("training.project.backend must be one of local, databricks, kubernetes or an installed MLflow project "
            "backend (entry point group mlflow.project_backend; installed: ") in refused(policy(tmp_path, "slurm", None))
    site = tmp_path / "site"
    dist = site / "slurm_backend-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: slurm-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mlflow.project_backend]\nslurm = slurm_backend:Slurm\n")
    monkeypatch.syspath_prepend(str(site))
    assert "slurm" in policy_backends.plugins()
    assert "installed: slurm" in refused(policy(tmp_path, "slurmm", None))
    plugin = parse(policy(tmp_path, "slurm", None)).training.project  # its config is its own, and optional
    assert plugin.backend == "slurm" and plugin.backend_config is None
    (tmp_path / "queue.json").write_text('{"queue": "gpu"}')
    assert backend_config(parse(policy(tmp_path, "slurm", "queue.json"))) == {"queue": "gpu"}


def test_what_the_project_and_the_machine_must_offer_a_remote_backend():
    assert "declares no docker_env" in backends.project_problem("kubernetes", {"entry_points": {}})
    assert backends.project_problem("kubernetes", {"docker_env": {"image": "python:3.11"}}) is None
    assert "does not run on Databricks" in backends.project_problem("databricks", {"docker_env": {"image": "x"}})
    assert backends.project_problem("slurm", {}) is None
    local = "sqlite:////srv/mlflow.db"
    assert "the Job's pod cannot open the local store sqlite:////srv/mlflow.db" in backends.tracking_problem(
        "kubernetes", local, {})
    assert backends.tracking_problem("kubernetes", local, {backends.KUBE_TRACKING: "http://mlflow.mlflow:5000"}) is None
    assert backends.tracking_problem("kubernetes", "https://mlflow.example.com", {}) is None
    assert "needs a tracking server the cluster reaches" in backends.tracking_problem("databricks", local, {})
    assert backends.tracking_problem("databricks", "databricks://ci", {}) is None
    assert backends.tracking_problem("slurm", local, {}) is None
    database = "postgresql://u:secret@db/m"
    assert backends.tracking_problem("kubernetes", database, {}) is None  # a pod may reach a database
    assert backends.tracking_problem("databricks", database, {}).endswith("not postgresql://***@db/m")
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        assert backends.missing_package("kubernetes") == ("backend kubernetes needs the kubernetes package where "
                                                          "the controller runs: pip install kubernetes")
    else:
        assert backends.missing_package("kubernetes") is None


def test_preflight_refuses_a_docker_project_on_databricks_before_the_lease(tmp_path):
    (tmp_path / "backend.json").write_text(json.dumps({"new_cluster": NEW_CLUSTER}))
    (tmp_path / "MLproject").write_text(yaml.safe_dump({"name": "m", "docker_env": {"image": "python:3.11"},
                                                        "entry_points": {"train": {"command": "python train.py"}}}))
    config = parse(policy(tmp_path, "databricks"))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri("sqlite:///" + str(tmp_path / "mlflow.db"))  # never opened: refused by its form
    try:
        with pytest.raises(TrainingError, match="needs a tracking server the cluster reaches"):
            preflight(config)
        mlflow.set_tracking_uri("databricks://ci")
        with pytest.raises(TrainingError, match=r"MLproject declares a docker_env, which MLflow does not run on Data"):
            preflight(config)
    finally:
        mlflow.set_tracking_uri(previous)
