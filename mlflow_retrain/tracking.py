"""Where runs go: check the tracking store is reachable, open runs in the right experiment.

An unreachable server would otherwise surface after MLflow's retries as a long traceback; we check
once, up front, with a short timeout, before anything is written.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from mlflow_retrain.errors import TrackingServerError

# MLflow draws a progress bar for every artifact download; in CI logs that is noise.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def check_tracking() -> str:
    """Return the tracking URI; for an HTTP server, prove it answers `/health` first."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except requests.RequestException as exc:
            raise TrackingServerError(
                f"tracking server {uri} is unreachable ({type(exc).__name__}); start it or fix MLFLOW_TRACKING_URI"
            ) from None
    return uri


@contextmanager
def start_run(experiment: str, run_name: str, tags: dict[str, str] | None = None) -> Iterator["object"]:
    """A run in `experiment`, or the run `mlflow run` already opened for this entry point.

    Inside `mlflow run`, MLFLOW_RUN_ID names the project's run (and its experiment): we log into it
    rather than set another experiment, which MLflow would refuse.
    """
    import mlflow

    if os.environ.get("MLFLOW_RUN_ID") and mlflow.active_run() is None:
        with mlflow.start_run() as run:
            mlflow.set_tags(tags or {})
            yield run
        return
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name, tags=tags or {}, nested=mlflow.active_run() is not None) as run:
        yield run
