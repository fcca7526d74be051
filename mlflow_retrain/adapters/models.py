"""Any MLflow model, scored one way: load it by its flavor, predict on the rows the data holds.

Why it is built this way: docs/design.md#adapters-models.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import sys
import importlib
from dataclasses import dataclass
from typing import Any, ContextManager, Sequence

import numpy as np
import pandas as pd

from mlflow_retrain.policy.config import Config, DataConfig
from mlflow_retrain.base.errors import ModelError

# Flavors whose native object has the scikit-learn API (predict, predict_proba): loaded as such.
NATIVE_FLAVORS = ("sklearn", "xgboost", "lightgbm")
# predictions on fewer rows than this run on one OpenMP thread (docs/design.md#adapters-models)
ONE_THREAD_ROWS = 50_000


def model_columns(config: Config, spec: DataConfig) -> tuple[str, ...]:
    """The columns a model of this policy takes: the features, and the timestamp when the policy
    hands it over (`training.pass_timestamp`) so the user's pipeline can derive features from it."""
    return ((spec.timestamp,) if config.training.pass_timestamp else ()) + tuple(spec.features)


def dataset_columns(spec: DataConfig) -> list[str]:
    """The columns of a logged dataset and of its digest, in this order: the timestamp, the features,
    the target. Whoever hashes a frame of rows (a training run's holdout, a cycle's holdout) hashes
    these, so the same rows give the same digest whatever else the data file carries."""
    return [spec.timestamp, *spec.features, spec.target]


class PyfuncOutput:
    """The contract for a custom pyfunc's output: an array or Series of predictions, or a DataFrame
    with a `prediction` column (else its first column is taken) and, for a classifier's roc_auc,
    `probability_<class>` columns (or one `probability` column: the positive class's)."""

    PREDICTION = "prediction"
    PROBABILITY = "probability"

    @classmethod
    def split(cls, output: Any) -> tuple[np.ndarray, np.ndarray | None]:
        if not isinstance(output, pd.DataFrame):
            return np.asarray(output).reshape(len(output), -1)[:, 0], None
        pred = output[cls.PREDICTION] if cls.PREDICTION in output.columns else output.iloc[:, 0]
        per_class = [c for c in output.columns if str(c).startswith(f"{cls.PROBABILITY}_")]
        if per_class:
            return pred.to_numpy(), output[per_class].to_numpy(dtype=float)
        if cls.PROBABILITY in output.columns:
            positive = output[cls.PROBABILITY].to_numpy(dtype=float)
            return pred.to_numpy(), np.column_stack([1 - positive, positive])
        return pred.to_numpy(), None


@dataclass
class Scorer:
    """A loaded model and the columns it takes; `predict` takes whole data rows."""

    model: Any
    columns: tuple[str, ...]
    flavor: str = "memory"

    def _inputs(self, rows: pd.DataFrame) -> pd.DataFrame:
        return rows[list(self.columns)]

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        with threads_for(len(rows)):
            if self.flavor == "pyfunc":
                return PyfuncOutput.split(self.model.predict(self._inputs(rows)))[0]
            return np.asarray(self.model.predict(self._inputs(rows)))

    def predict_with_proba(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions and, where the model has them, class probabilities (one call for a pyfunc)."""
        inputs = self._inputs(rows)
        with threads_for(len(rows)):
            if self.flavor == "pyfunc":
                return PyfuncOutput.split(self.model.predict(inputs))
            pred = np.asarray(self.model.predict(inputs))
            proba = self.model.predict_proba(inputs) if hasattr(self.model, "predict_proba") else None
        return pred, None if proba is None else np.asarray(proba)


@functools.lru_cache(maxsize=1)
def _openmp(modules: int) -> Any:
    """The OpenMP runtimes loaded (a scan costs ms): scanned again once modules were imported since,
    for a model of another library (LightGBM, XGBoost) brings its own runtime, which the first scan
    did not see and would leave on every core."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="openmp")


def threads_for(rows: int) -> ContextManager[Any]:
    """One OpenMP thread for a prediction or a fit on few rows: threads that start and spin for every
    tree cost more than the rows (20-100x the CPU of one thread on a busy 2-core machine); the results
    are the same."""
    if rows >= ONE_THREAD_ROWS:
        return contextlib.nullcontext()
    return _openmp(len(sys.modules)).limit(limits=1)


def signature_columns(signature: Any) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(all, required) input column names of a signature; None when it names no columns."""
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        return None
    specs = signature.inputs.inputs
    return tuple(s.name for s in specs), tuple(s.name for s in specs if not getattr(s, "optional", False))


def check_columns(model_uri: str, declared: tuple[tuple[str, ...], tuple[str, ...]] | None,
                  expected: Sequence[str]) -> tuple[str, ...]:
    """The model's input schema against the columns the policy gives it: a mismatch either way is a
    user error (a feature the model never saw would be dropped silently; one it needs would crash)."""
    if declared is None:
        return tuple(expected)
    names, required = declared
    missing = [c for c in required if c not in expected]
    extra = [c for c in expected if c not in names]
    if missing:
        raise ModelError(f"{model_uri} needs column(s) {', '.join(missing)} that the policy does not give it "
                         "(data.features / data.exclude, or training.pass_timestamp for the timestamp)")
    if extra:
        raise ModelError(f"{model_uri}'s input schema lacks column(s) {', '.join(extra)} that the data has; "
                         "list them under data.exclude or retrain the model with them")
    return tuple(c for c in names if c in expected)


def _download(model_uri: str) -> str:
    """The model's local folder. A local artifact store is read in place, but for a `models:/` URI
    MLflow also writes `registered_model_meta` into that folder: where it may not (an auditor's
    read-only copy of the store), the folder the URI stands for is read without that file."""
    import mlflow.artifacts
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or not model_uri.startswith("models:/"):
            raise
    return mlflow.artifacts.download_artifacts(artifact_uri=ModelsArtifactRepository.get_underlying_uri(model_uri))


def load(model_uri: str, config: Config, spec: DataConfig) -> Scorer:
    """Load a registered or logged model of any flavor, its columns checked against the policy's."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        local = _download(model_uri)
        meta = Model.load(local)
    except (MlflowException, OSError) as exc:
        raise ModelError(f"{model_uri} cannot be loaded: {str(exc).splitlines()[0][:300]}") from None
    columns = check_columns(model_uri, signature_columns(meta.signature), model_columns(config, spec))
    flavor = next((f for f in NATIVE_FLAVORS if f in meta.flavors), "pyfunc")
    try:
        if flavor == "sklearn":  # through skops once per machine (model_cache)
            from mlflow_retrain.adapters import model_cache

            model = model_cache.load_sklearn(local, meta.flavors["sklearn"])
        else:
            loader = {"xgboost": "mlflow.xgboost", "lightgbm": "mlflow.lightgbm", "pyfunc": "mlflow.pyfunc"}[flavor]
            model = importlib.import_module(loader).load_model(local)
    except (ImportError, ModuleNotFoundError) as exc:
        raise ModelError(f"{model_uri} ({flavor} flavor) needs {exc.name or exc} installed to load") from None
    except MlflowException as exc:  # MLflow's documented switch, named in its message: the user's choice, not a bug
        if "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" not in str(exc):
            raise
        raise ModelError(f"{model_uri} is not loaded: MLFLOW_ALLOW_PICKLE_DESERIALIZATION is false, and loading a "
                         f"{flavor} model deserializes its file; set it to true to load models from a registry you "
                         "trust") from None
    return Scorer(model, columns, flavor)
