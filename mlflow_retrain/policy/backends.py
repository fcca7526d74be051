"""Where a user's project trains, as far as the policy's files tell:

Why it is built this way: docs/design.md#policy-backends.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

BUILTIN = ("local", "databricks", "kubernetes")
REMOTE = ("databricks", "kubernetes")  # MLflow's own remote backends: each needs a backend config
GROUP = "mlflow.project_backend"  # MLflow's entry point group for project backends (projects/backend/loader.py)
TEMPLATE, REPOSITORY, CONTEXT = "kube-job-template-path", "repository-uri", "kube-context"


def plugins() -> list[str]:
    """The project backends other packages install, by name (read each time: nothing cached)."""
    from importlib.metadata import entry_points

    return sorted({point.name for point in entry_points(group=GROUP)} - set(BUILTIN))


def unknown(name: str, installed: Iterable[str]) -> str | None:
    """Why `name` is no backend MLflow can run a project on, or None."""
    installed = list(installed)
    if name in BUILTIN or name in installed:
        return None
    return (f"must be one of {', '.join(BUILTIN)} or an installed MLflow project backend (entry point group "
            f"{GROUP}; installed: {', '.join(installed) or 'none'}), got {name!r}")


def resolve(path: str, base: Path | None) -> Path:
    """A relative path against `base` (the policy file's folder; the working folder without one)."""
    found = Path(path).expanduser()
    return found if found.is_absolute() or base is None else base / found


def read(path: Path) -> dict[str, Any]:
    """The backend config as MLflow reads it; ValueError saying why it cannot be read (a message for
    the policy's key, whatever the cause)."""
    if path.suffix != ".json":
        raise ValueError(f"{path} must be a .json file (MLflow reads a backend config only from a .json path)")
    try:
        text = path.read_text()
    except OSError:
        raise ValueError(f"{path} does not exist or cannot be read") from None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(spec).__name__}")  # noqa: TRY004 - one kind
    return spec


def problem(backend: str, spec: Mapping[str, Any], base: Path | None) -> str | None:
    """Why MLflow's `backend` cannot run with the backend config `spec`, or None (a plugin's config is
    the plugin's to read). The kubernetes Job template it names is read here."""
    if backend == "kubernetes":
        return kubernetes_problem(spec, base)
    if backend == "databricks":
        return databricks_problem(spec)
    return None


def kubernetes_problem(spec: Mapping[str, Any], base: Path | None) -> str | None:
    """What `mlflow.projects._parse_kubernetes_config` needs, and a Job template it can fill in."""
    needed = {TEMPLATE: "the Kubernetes Job template MLflow fills in with the project's image and command "
                        "(see examples/kubernetes/)",
              REPOSITORY: "the image repository MLflow pushes the project's image to, e.g. "
                          "registry.example.com/team/model"}
    for key, what in needed.items():
        if not isinstance(spec.get(key), str) or not spec[key].strip():
            return f"needs {key}: {what}"
    if CONTEXT in spec and not isinstance(spec[CONTEXT], str):
        return f"{CONTEXT} must be a string (a context of your kubeconfig), got {spec[CONTEXT]!r}"
    path = resolve(spec[TEMPLATE], base)
    try:
        template = yaml.safe_load(path.read_text())
    except OSError:
        return f"{TEMPLATE} {path} does not exist or cannot be read"
    except yaml.YAMLError as exc:
        return f"{TEMPLATE} {path} is not valid YAML: {str(exc).splitlines()[0]}"
    if why := job_template_problem(template):
        return f"{TEMPLATE} {path}: {why}"
    return None


def job_template_problem(template: Any) -> str | None:
    """What MLflow's kubernetes backend (`mlflow/projects/kubernetes.py`) and the cluster need of the
    Job it fills in: a Job with a namespace, whose first container gets the project's name, image,
    command and MLFLOW_* environment, in a pod that does not restart (Kubernetes refuses `Always`,
    the pod default, in a Job)."""
    if not isinstance(template, Mapping):
        return "must be a YAML mapping, a Kubernetes Job"
    if template.get("kind") != "Job":
        return f"kind must be Job, got {template.get('kind')!r}"
    metadata = template.get("metadata")
    if not isinstance(metadata, Mapping) or not metadata.get("namespace"):
        return "needs metadata.namespace, the namespace MLflow creates the Job in"
    pod = _at(template, "spec", "template", "spec")
    containers = pod.get("containers") if isinstance(pod, Mapping) else None
    if not isinstance(containers, list) or not containers or not isinstance(containers[0], Mapping):
        return "spec.template.spec.containers must list a container: MLflow sets the first one's name, image and command"
    env = containers[0].get("env") or []
    if not isinstance(env, list) or not all(isinstance(e, Mapping) and e.get("name") for e in env):
        return ("spec.template.spec.containers[0].env must list {name: ..., value: ...} entries (MLflow appends "
                "MLFLOW_TRACKING_URI, MLFLOW_RUN_ID and MLFLOW_EXPERIMENT_ID to them); a placeholder string is not one")
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        return (f"spec.template.spec.restartPolicy must be Never or OnFailure (a Job's pod cannot restart Always, "
                f"the default), got {pod.get('restartPolicy')!r}")
    return None


def _at(tree: Any, *keys: str) -> Any:
    for key in keys:
        tree = tree.get(key) if isinstance(tree, Mapping) else None
    return tree


def databricks_problem(spec: Mapping[str, Any]) -> str | None:
    """MLflow runs a project on Databricks on a new cluster only: `{"new_cluster": {...}}` (with
    optional `libraries`) or the new cluster's spec itself."""
    if "existing_cluster_id" in spec:
        return ("names existing_cluster_id, which MLflow refuses: it runs projects on Databricks on a new cluster "
                "only; give new_cluster instead")
    cluster = spec.get("new_cluster", spec)
    if not isinstance(cluster, Mapping) or not cluster.get("spark_version"):
        return ('needs a new cluster spec with a spark_version: {"new_cluster": {"spark_version": ..., '
                '"node_type_id": ..., "num_workers": ...}}, or those keys at the top')
    return None
