"""Which MLflow store a command uses: never a guess.

Why it is built this way: docs/design.md#adapters-store.
"""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from mlflow_retrain.policy.config import Config
from mlflow_retrain.base.errors import ConfigError
from mlflow_retrain.base.redact import redact

TRACKING, REGISTRY, EXPERIMENT = "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"


@dataclass(frozen=True)
class Store:
    tracking_uri: str
    registry_uri: str
    origin: str  # where the tracking URI came from

    @property
    def local_folder(self) -> Path | None:
        """The folder of a local sqlite store (where its artifacts go), else None."""
        path = sqlite_file(self.tracking_uri)
        return None if path is None else path.parent

    def describe(self) -> str:
        registry = "" if self.registry_uri == self.tracking_uri else f", registry {redact(self.registry_uri)}"
        return f"tracking store {redact(self.tracking_uri)} ({self.origin}){registry}"

    def to_dict(self) -> dict[str, Any]:
        return {"tracking_uri": redact(self.tracking_uri), "registry_uri": redact(self.registry_uri),
                "origin": self.origin}


def sqlite_file(uri: str) -> Path | None:
    """The file of a local sqlite store, else None."""
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0]) if uri.startswith("sqlite:///") else None


def unborn(uri: str) -> Path | None:
    """The file of a local sqlite store that does not exist yet, else None. Opening such a store (even
    making an `MlflowClient` for it) creates the file: a command that only reads asks this first and
    says there is nothing yet, so `check` and `status` in a fresh folder leave it as it was."""
    path = sqlite_file(uri)
    return path if path is not None and not path.exists() else None


def _anchored(uri: str, folder: Path) -> str:
    """A relative sqlite path or plain folder in the policy, made absolute against the policy's folder."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(folder / uri.removeprefix('sqlite:///')).resolve()}"
    if "://" not in uri and not uri.startswith("/"):
        return str((folder / uri).resolve())
    return uri


def resolve(config: Config | None, environ: Mapping[str, str] = os.environ) -> Store:
    """The store a command uses for `config` (see the module docstring for the order)."""
    folder = config.source.parent if config is not None and config.source is not None else Path.cwd()
    env = environ.get(TRACKING)
    if env is not None and not env.strip():
        raise ConfigError(f"{TRACKING} is set but empty (a missing CI secret?): set it to your tracking server, "
                          "or unset it to use the policy's store")
    if env:
        uri, origin = env, TRACKING
    elif config is not None and config.tracking_uri:
        uri, origin = _anchored(config.tracking_uri, folder), f"tracking_uri in {config.source or 'the policy'}"
    else:
        uri, origin = f"sqlite:///{(folder / 'mlflow.db').resolve()}", "default: mlflow.db beside the policy file"
    registry = environ.get(REGISTRY, "").strip() or uri
    return Store(uri, registry, origin)


def use(store: Store) -> None:
    """Make `store` the one this process and its children (training runs) talk to."""
    os.environ[TRACKING] = store.tracking_uri
    import sys

    if "mlflow" in sys.modules:  # already imported: its cached default must follow too
        import mlflow

        mlflow.set_tracking_uri(store.tracking_uri)
        mlflow.set_registry_uri(store.registry_uri)


# The MLflow 3 UI has two modes: GenAI (traces, evaluations) and model training (runs, metrics, models).
# Its experiment page reads an experiment's mode from this tag, the one its own kind selector writes
# (`custom_model_development` is "Machine learning", `genai_development` "GenAI apps & agents"); an
# experiment without it is guessed from its contents. MLflow 3.17's UI also keeps one mode per
# browser (the sidebar switch, or `?workflowType=machine_learning` in a link), which wins over the tag.
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
NOTE = "mlflow.note.content"  # the description the UI shows on the experiment's page and in its list
# what each experiment the tool makes holds, by the suffix of its name (the bare name: the training runs)
HOLDS = {"-controller": "The audit trail of mlflow-retrain on this model: one run per cycle, move by hand, "
                        "sign-off or repair, named after what it decided, with the triggers, the gate's numbers "
                        "on the holdout and the Evidently reports.",
         "-monitor": "The monitoring series of mlflow-retrain: the error over time of whichever version was in "
                     "Production, drift and downtime, with the HTML dashboard as an artifact.",
         "-backtest": "The fits of mlflow-retrain backtest when the model is a project: its entry point run on "
                      "each replayed training window; nothing here was registered.",
         "": "The training runs of mlflow-retrain: one per version it trained, with its parameters, metrics, "
             "datasets and model; the versions are in the Model registry."}


def _experiment_tags(name: str, have: dict[str, str]) -> dict[str, str]:
    """The model-training kind and a description of what the experiment holds, where not set yet (a
    person's own description stays)."""
    holds = next(text for suffix, text in HOLDS.items() if name.endswith(suffix))
    wanted = {EXPERIMENT_KIND_TAG: MODEL_TRAINING, NOTE: holds}
    return {key: value for key, value in wanted.items() if not have.get(key)}


@contextmanager
def scoped() -> Iterator[None]:
    """A command's store lasts as long as the command. The CLI run in-process (tests, a notebook
    calling `main`) then leaves its caller's store as it found it: MLflow keeps the URI both in its
    environment variable and in module globals, and both are put back, with the active experiment
    (`mlflow.set_experiment` sets a global and MLFLOW_EXPERIMENT_ID)."""
    saved_env = {key: os.environ.get(key) for key in (TRACKING, REGISTRY, EXPERIMENT)}
    saved = _mlflow_globals()
    try:
        yield
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if "mlflow" in sys.modules:
            from mlflow.tracking import fluent
            from mlflow.tracking._model_registry import utils as registry_utils
            from mlflow.tracking._tracking_service import utils as tracking_utils

            (tracking_utils._tracking_uri, registry_utils._registry_uri,
             fluent._active_experiment_id) = saved or (None, None, None)


def _mlflow_globals() -> tuple[Any, Any, Any] | None:
    """MLflow's tracking URI, registry URI and active experiment as its module globals hold them."""
    if "mlflow" not in sys.modules:
        return None
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return tracking_utils._tracking_uri, registry_utils._registry_uri, fluent._active_experiment_id


def ensure_experiment(name: str) -> str:
    """The experiment's id, creating it with its artifacts beside a local store (not in the working
    folder, where MLflow would put them), tagged to open in the UI's model-training mode and described
    (`HOLDS`)."""
    import mlflow

    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "active":  # one made before the tool tagged them (or by hand): tag it now
            for key, value in _experiment_tags(name, found.tags).items():
                mlflow.MlflowClient().set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id
    location = None
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        # MLflow's own layout, mlruns/<experiment>/<run>/artifacts, with the name for the id (unknown
        # before creation): a folder per experiment keeps the logged models of each apart
        folder = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "experiment"
        root = Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).parent / "mlruns" / folder
        location = root.resolve().as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location, tags=_experiment_tags(name, {}))
    except mlflow.exceptions.MlflowException as exc:  # created meanwhile by a concurrent cycle
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return mlflow.get_experiment_by_name(name).experiment_id
