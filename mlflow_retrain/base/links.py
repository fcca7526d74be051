"""Links into the MLflow UI, each opening in its model-training mode.

MLflow 3's UI has two modes, GenAI (traces, an overview with "Detect Issues") and model training
(runs, metrics, the model registry). Since 3.17 the mode is the browser's (remembered in its local
storage, GenAI in a fresh one), not the experiment's `mlflow.experimentKind` tag; only a
`workflowType` in the link overrides it, for that page. So every link the tool prints or writes
carries it: docs/design.md#base-links.
"""

from __future__ import annotations

from urllib.parse import quote

MODE = "workflowType=machine_learning"


def experiment(experiment_id: str) -> str:
    """An experiment's runs tab (not its overview, which is a GenAI page)."""
    return f"#/experiments/{experiment_id}/runs?{MODE}"


def run(run_id: str, experiment_id: str | None = None, artifact: str = "") -> str:
    """A run's page, or one of its artifacts in the viewer. Without the experiment, the UI's short
    form, whose redirect drops the mode: a last resort (`tracking.run_page` finds the experiment)."""
    if not experiment_id:
        return f"#/runs/{run_id}?{MODE}"
    return f"#/experiments/{experiment_id}/runs/{run_id}" + (f"/artifactPath/{artifact}" if artifact else "") + f"?{MODE}"


def model(name: str, version: str | None = None) -> str:
    """A registered model's page, or one of its versions'."""
    page = f"#/models/{quote(name, safe='')}"
    return page + (f"/versions/{version}" if version else "") + f"?{MODE}"


def absolute(base: str, link: str) -> str:
    """`link` under the UI at `base` (a server's address, no trailing slash needed)."""
    return f"{base.rstrip('/')}/{link}"
