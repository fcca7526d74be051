"""Fit the configured estimator on a training window, log it, register a version.

`fit` is MLflow-free so the backtest can call (and cache) exactly the training the controller uses;
`train` adds the logging and registration that make every version traceable.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from mlflow_retrain import tags as T
from mlflow_retrain.config import Config
from mlflow_retrain.data import LabelledData, Window, frame_digest, training_windows
from mlflow_retrain.errors import ConfigError
from mlflow_retrain.metrics import score

log = logging.getLogger(__name__)


def build_estimator(config: Config) -> Pipeline:
    """One-hot the categorical columns, pass numbers through, then the configured estimator.

    One-hot (not ordinal) keeps any scikit-learn estimator usable, linear ones included.
    """
    module_name, _, class_name = config.training.estimator.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise ConfigError(
            f"training.estimator {config.training.estimator!r} cannot be imported; use a dotted path such as "
            "sklearn.ensemble.HistGradientBoostingRegressor"
        ) from None
    params = dict(config.training.params)
    if "random_state" in inspect.signature(cls).parameters:
        params.setdefault("random_state", config.training.seed)
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise ConfigError(f"training.params do not fit {class_name}: {exc}") from None
    encode = ColumnTransformer(
        [("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(config.data.categorical))],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )
    return Pipeline([("encode", encode), ("model", estimator)])


@dataclass
class FitResult:
    """A fitted model and everything needed to log it or compare it."""

    model: BaseEstimator
    train_window: Window
    holdout_window: Window
    train_rows: pd.DataFrame = field(repr=False)
    holdout_rows: pd.DataFrame = field(repr=False)
    holdout_metrics: dict[str, float]
    fit_seconds: float


def fit(config: Config, data: LabelledData, as_of: pd.Timestamp) -> FitResult:
    """Train on `(as_of - holdout - window, as_of - holdout]` and score the held-out recent rows."""
    train_window, holdout_window = training_windows(as_of, config.training.window, config.training.holdout)
    train_rows = data.cut(train_window, "training window")
    holdout_rows = data.cut(holdout_window, "holdout window")
    model = build_estimator(config)
    started = time.perf_counter()
    try:
        model.fit(data.features(train_rows), data.target(train_rows))
    except ValueError as exc:
        raise ConfigError(f"{config.training.estimator} cannot fit this data ({exc}); check task and estimator") from None
    seconds = time.perf_counter() - started
    metrics = score(config.task, data.target(holdout_rows), model.predict(data.features(holdout_rows)),
                    _proba(model, data.features(holdout_rows)))
    return FitResult(model, train_window, holdout_window, train_rows, holdout_rows, metrics, seconds)


def _proba(model: Any, features: pd.DataFrame) -> np.ndarray | None:
    return model.predict_proba(features) if hasattr(model, "predict_proba") else None


@dataclass(frozen=True)
class TrainResult:
    """What `train` registered, returned to the caller and printed by the CLI."""

    run_id: str
    version: str
    stage: str
    model_uri: str
    train_window: str
    holdout_window: str
    holdout_metrics: dict[str, float]
    train_digest: str
    holdout_digest: str
    fit_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def trusted_types(model: BaseEstimator) -> list[str]:
    """The types skops must trust to load this model: ours, since we just built it."""
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(model))


def model_requirements() -> list[str]:
    """What loading the model needs: scikit-learn and skops at the versions that saved it."""
    from importlib.metadata import version

    return [f"scikit-learn=={version('scikit-learn')}", f"skops=={version('skops')}",
            f"pandas=={version('pandas')}", f"numpy=={version('numpy')}"]


def log_fit(config: Config, data: LabelledData, result: FitResult) -> tuple[str, str, str, str]:
    """Log params, metrics, datasets, the reference frame and the model in the active run.

    Returns (model_uri, model_id, train_digest, holdout_digest): a tracking server only registers a
    `models:/m-...` source when it is also told the model id. The reference frame (the exact training rows)
    is what drift is measured against later, so it is stored with the run rather than re-derived.
    """
    import mlflow
    from mlflow.models import infer_signature

    # MLflow warns about integer columns in signatures and ambiguous local sources on every call;
    # neither applies (a column with missing values is read as float; the source is a path we name).
    warnings.filterwarnings("ignore", message=".*(Integer columns|dataset source can be interpreted).*")
    columns = [config.data.timestamp, *config.data.features, config.data.target]
    train_digest = frame_digest(result.train_rows[columns])
    holdout_digest = frame_digest(result.holdout_rows[columns])
    mlflow.log_params({
        "estimator": config.training.estimator,
        **{f"param.{k}": v for k, v in config.training.params.items()},
        "train_window": result.train_window.iso(),
        "holdout_window": result.holdout_window.iso(),
        "train_rows": len(result.train_rows),
        "holdout_rows": len(result.holdout_rows),
        "features": ",".join(config.data.features),
    })
    mlflow.log_metrics({f"holdout_{k}": v for k, v in result.holdout_metrics.items() if np.isfinite(v)})
    mlflow.log_metric("fit_seconds", result.fit_seconds)
    for context, rows, digest in (("training", result.train_rows, train_digest),
                                  ("holdout", result.holdout_rows, holdout_digest)):
        dataset = mlflow.data.from_pandas(rows[columns], source=data.origin, targets=config.data.target,
                                          name=f"{config.model_name}-{context}", digest=digest)
        mlflow.log_input(dataset, context=context)
    _log_frame(result.train_rows[columns], T.REFERENCE_ARTIFACT)
    features = data.features(result.holdout_rows)
    info = mlflow.sklearn.log_model(
        result.model,
        name="model",
        signature=infer_signature(features, result.model.predict(features.head(50))),
        input_example=features.head(5),
        skops_trusted_types=trusted_types(result.model),
        # named, not inferred: inference re-imports the model in a subprocess (5 s per version)
        pip_requirements=model_requirements(),
    )
    return info.model_uri, info.model_id, train_digest, holdout_digest


def _log_frame(frame: pd.DataFrame, artifact_path: str) -> None:
    import tempfile
    from pathlib import Path

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_path).name
        frame.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), str(Path(artifact_path).parent))


def train(
    config: Config,
    *,
    as_of: str | pd.Timestamp | None = None,
    data: LabelledData | None = None,
    trigger: str = "manual",
    reason: str = "trained by hand",
    cycle_run_id: str = "",
    bootstrap: bool = True,
) -> TrainResult:
    """Fit, log, register. The new version goes to Staging for the controller to validate, except
    the very first one: with no Production to compare against, a version that passes the absolute
    gate goes straight to Production (trigger `bootstrap`) so the loop has a champion to defend.

    Fitting happens before any run or version exists, so bad data or a bad estimator writes nothing.
    """
    from mlflow_retrain.registry import Registry
    from mlflow_retrain.tracking import check_tracking, start_run

    data = data or LabelledData.load(config)
    as_of = data.resolve_as_of(as_of)
    check_tracking()
    result = fit(config, data, as_of)
    registry = Registry(config)
    is_bootstrap = bootstrap and registry.production() is None
    trigger = T.BOOTSTRAP if is_bootstrap else trigger
    if is_bootstrap:
        reason = "no Production version yet: the first model that passes the absolute gate becomes Production"
    run_tags = {T.RUN_KIND: "train", T.TRIGGER: trigger, T.REASON: reason, T.AS_OF: as_of.isoformat(),
                T.CYCLE_RUN_ID: cycle_run_id}
    with start_run(config.experiment, f"train as of {as_of.isoformat()}", run_tags) as run:
        model_uri, model_id, train_digest, holdout_digest = log_fit(config, data, result)
    version_tags = {
        T.TRIGGER: trigger, T.REASON: reason, T.CYCLE_RUN_ID: cycle_run_id, T.AS_OF: as_of.isoformat(),
        T.TRAIN_WINDOW: result.train_window.iso(), T.HOLDOUT_WINDOW: result.holdout_window.iso(),
        T.DECISION: T.PENDING,
    }
    info = registry.register(model_uri, model_id, run.info.run_id, version_tags)
    stage = "Staging"
    if is_bootstrap:
        from mlflow_retrain.validation import gate

        decision = gate(metric=config.metric, candidate=result.holdout_metrics[config.metric], baseline=None,
                        higher_is_better=config.higher_is_better, threshold=config.gate_threshold)
        registry.tag(info.version, {T.DECISION: T.PROMOTED if decision.promote else T.PENDING,
                                    T.DECISION_REASON: decision.reason})
        if decision.promote:
            registry.promote(info.version, when=as_of.to_pydatetime())
            stage = "Production"
    if stage == "Staging":
        registry.stage_candidate(info.version)
    log.info("registered %s version %s (%s)", config.model_name, info.version, stage)
    return TrainResult(
        run_id=run.info.run_id, version=info.version, stage=stage, model_uri=model_uri,
        train_window=result.train_window.iso(), holdout_window=result.holdout_window.iso(),
        holdout_metrics=result.holdout_metrics, train_digest=train_digest, holdout_digest=holdout_digest,
        fit_seconds=result.fit_seconds,
    )
