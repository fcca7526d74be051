"""Where a user's project trains, as far as the project and the machine tell: checked before the lease
(`trainers.preflight`), after the policy's own files were (`policy.backends`). The project's MLproject
declares the `docker_env` the kubernetes backend builds its image from (and the databricks backend
refuses), the `kubernetes` package MLflow drives the cluster with is installed, and the tracking URI
is one the cluster can reach. MLflow is handed the backend config with its relative paths made
absolute, so CI may start the controller from anywhere. Every check is a function of what was read,
returning why it cannot run or None.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow_retrain.policy.backends import TEMPLATE, resolve

# where a kubernetes Job's pod finds the tracking server when the controller's address is not it
KUBE_TRACKING = "KUBE_MLFLOW_TRACKING_URI"


def for_mlflow(spec: Mapping[str, Any], base: Path | None) -> dict[str, Any]:
    """The backend config handed to MLflow: a relative Job template path made absolute (MLflow would
    resolve it against the working folder)."""
    out = dict(spec)
    if isinstance(out.get(TEMPLATE), str):
        out[TEMPLATE] = str(resolve(out[TEMPLATE], base).resolve())
    return out


def project_problem(backend: str, mlproject: Mapping[str, Any]) -> str | None:
    """Why the project (its parsed MLproject) cannot run on `backend`, or None."""
    docker = mlproject.get("docker_env")
    if backend == "kubernetes" and not docker:
        return ("declares no docker_env, which the kubernetes backend builds the project's image from; add "
                "docker_env: {image: <a base image with your libraries>}")
    if backend == "databricks" and docker:
        return "declares a docker_env, which MLflow does not run on Databricks; remove it or train on kubernetes"
    return None


def missing_package(backend: str) -> str | None:
    """MLflow's kubernetes backend imports `kubernetes` (and `docker`, an MLflow dependency); MLflow
    does not depend on it."""
    import importlib.util

    if backend == "kubernetes" and importlib.util.find_spec("kubernetes") is None:
        return "backend kubernetes needs the kubernetes package where the controller runs: pip install kubernetes"
    return None


def tracking_problem(backend: str, uri: str, environ: Mapping[str, str]) -> str | None:
    """A remote job logs its run and model to the tracking store: one it can reach. MLflow itself
    refuses anything but a databricks or http(s) URI for databricks; a Kubernetes pod cannot open the
    controller's local files (a sqlite file, a folder) either, unless KUBE_MLFLOW_TRACKING_URI gives
    it a server."""
    from mlflow_retrain.base.redact import redact

    if backend == "databricks" and not uri.startswith(("http://", "https://", "databricks")):
        return ("backend databricks needs a tracking server the cluster reaches (databricks or http(s)://), "
                f"not {redact(uri)}")
    local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
    if backend == "kubernetes" and local and not environ.get(KUBE_TRACKING):
        return (f"backend kubernetes: the Job's pod cannot open the local store {redact(uri)}; use an mlflow server "
                f"(MLFLOW_TRACKING_URI=http(s)://...), or set {KUBE_TRACKING} to the server the pod reaches")
    return None
