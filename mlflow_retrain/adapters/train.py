"""Fit the configured estimator on a training window, log it, register a version.

`fit` is MLflow-free so the backtest can call (and cache) exactly the training the controller uses;
`train` adds the logging and registration that make every version traceable. Where the version goes
(Staging, or Production for a first model) is `loop.moves.place`'s: nothing here moves a version.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from mlflow_retrain.base import links
from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.config import Config, DataConfig
from mlflow_retrain.adapters.data import LabelledData, Window, frame_digest, training_windows
from mlflow_retrain.base.errors import ConfigError, TrainingError
from mlflow_retrain.decide.words import moment, unit_for
from mlflow_retrain.measure.metrics import score
from mlflow_retrain.adapters.models import Scorer, dataset_columns, model_columns, threads_for

log = logging.getLogger(__name__)


def import_object(spec: str, config: Config) -> Any:
    """A class (`package.module.Class`) or a factory (`package.module:function`) by name.

    The policy file's folder is importable, so a `features.py` beside `retrain.yaml` is found from
    any working folder (and inside the built-in MLproject's subprocess).
    """
    module_name, _, name = spec.partition(":") if ":" in spec else spec.rpartition(".")
    folder = str(config.source.parent) if config.source is not None else None
    if folder and folder not in sys.path:
        sys.path.append(folder)
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise TrainingError(f"training.estimator {spec!r} cannot be imported ({type(exc).__name__}: {exc}); use a "
                            "dotted class such as sklearn.ensemble.HistGradientBoostingRegressor or a factory "
                            "package.module:function importable from the policy file's folder") from None


def build_estimator(config: Config, spec: DataConfig) -> Any:
    """The model to fit: a factory's own estimator or Pipeline as it is, or a class behind a one-hot
    encoding of the categorical columns.

    One-hot (not ordinal) keeps any scikit-learn-API estimator usable, linear ones included; a factory
    owns its feature engineering, so it gets the raw columns (and the timestamp, when passed).
    """
    target = import_object(config.training.estimator, config)
    params = dict(config.training.params)
    name = config.training.estimator
    if not config.training.is_factory and "random_state" in inspect.signature(target).parameters:
        params.setdefault("random_state", config.training.seed)
    try:
        estimator = target(**params)
    except TypeError as exc:
        raise ConfigError(f"training.params do not fit {name}: {exc}") from None
    if not (hasattr(estimator, "fit") and hasattr(estimator, "predict")):
        raise TrainingError(f"training.estimator {name!r} returned {type(estimator).__name__}, which has no "
                            "fit/predict; return a scikit-learn-API estimator or Pipeline")
    if config.training.is_factory:
        return estimator
    encode = ColumnTransformer(
        [("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(spec.categorical))],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )
    return Pipeline([("encode", encode), ("model", estimator)])


@dataclass
class FitResult:
    """A fitted model and everything needed to log it or compare it."""

    model: Any
    columns: tuple[str, ...]
    train_window: Window
    holdout_window: Window
    train_rows: pd.DataFrame = field(repr=False)
    holdout_rows: pd.DataFrame = field(repr=False)
    holdout_metrics: dict[str, float]
    fit_seconds: float
    flavor: str = "memory"

    @property
    def scorer(self) -> Scorer:
        return Scorer(self.model, self.columns, self.flavor)


def refit_window(as_of: pd.Timestamp, window: timedelta, holdout: timedelta) -> Window:
    """A refit's rows (`training.refit_on_pass`): the training window extended through `as_of`."""
    train_window, holdout_window = training_windows(as_of, window, holdout)
    return Window(train_window.start, holdout_window.end)


def fit(config: Config, data: LabelledData, as_of: pd.Timestamp, *, refit: bool = False) -> FitResult:
    """Train on `(as_of - holdout - window, as_of - holdout]` and score the held-out recent rows.

    A `refit` trains through `as_of`, holdout included: it has no unseen rows to score, so its
    holdout metrics are empty (the gate's evidence is the validated fit's)."""
    train_window, holdout_window = training_windows(as_of, config.training.window, config.training.holdout)
    if refit:
        train_window = refit_window(as_of, config.training.window, config.training.holdout)
    train_rows = data.cut(train_window, "training window")
    holdout_rows = data.cut(holdout_window, "holdout window")
    model = build_estimator(config, data.spec)
    columns = model_columns(config, data.spec)
    started = time.perf_counter()
    try:
        with threads_for(len(train_rows)):  # a small fit on every core spins more than it fits
            model.fit(train_rows[list(columns)], data.target(train_rows))
    except (ValueError, TypeError) as exc:
        raise TrainingError(f"{config.training.estimator} cannot fit this data ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:300]}); check task, estimator and columns") from None
    seconds = time.perf_counter() - started
    result = FitResult(model, columns, train_window, holdout_window, train_rows, holdout_rows, {}, seconds)
    if refit:
        return result
    pred, proba = result.scorer.predict_with_proba(holdout_rows)
    result.holdout_metrics = score(config.task, data.target(holdout_rows), pred, proba)
    return result


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


@dataclass(frozen=True)
class Candidate:
    """A version just registered and not placed yet: what `loop.moves.place` needs to place it."""

    version: str
    metric: float  # the policy's metric on its holdout: a first model's absolute gate reads it
    as_of: pd.Timestamp  # the data time it was trained as of
    bootstrap: bool  # the model's first version: passing the absolute gate, it goes straight to Production


def model_requirements(model: Any) -> list[str]:
    """The distributions whose objects make up the model, pinned at the versions that fitted it.

    Read off the fitted objects themselves (a Pipeline's steps, a wrapped XGBoost or LightGBM
    estimator, the user's own transformers' packages), so serving installs what the model needs
    and nothing is guessed; inferring them instead re-imports the model in a subprocess (5 s).
    """
    from importlib.metadata import version

    owners = _owners()
    parts = [model, *(model.get_params(deep=True).values() if hasattr(model, "get_params") else [])]
    roots = {str(getattr(part, "__module__", None) or type(part).__module__).split(".")[0] for part in parts}
    found = {dist for root in roots | {"pandas", "numpy", "sklearn"} for dist in owners.get(root, [])}
    return sorted(f"{dist}=={version(dist)}" for dist in found)


_OWNERS: dict[tuple, dict[str, list[str]]] = {}


def _owners() -> dict[str, list[str]]:
    """`importlib.metadata.packages_distributions()` (0.4 s of CPU, read on every training), kept
    while the distributions' metadata folders on `sys.path` are the same: installing, upgrading or
    removing one changes them, so the next read sees it."""
    from importlib.metadata import packages_distributions

    found = ((entry, sorted(name for name in os.listdir(entry) if name.endswith((".dist-info", ".egg-info"))))
             for entry in sys.path if os.path.isdir(entry))
    key = tuple((entry, tuple(names)) for entry, names in found if names)
    owners = _OWNERS.get(key)
    if owners is None:  # a local, not a second lookup: another thread's training may clear the dict meanwhile
        owners = packages_distributions()
        _OWNERS.clear()
        _OWNERS[key] = owners
    return owners


def _flavor(model: Any) -> str:
    """XGBoost and LightGBM estimators on their own are logged with their own flavor; anything else
    (a Pipeline around them included) as scikit-learn."""
    root = type(model).__module__.split(".")[0]
    return root if root in ("xgboost", "lightgbm") else "sklearn"


def _code_paths(config: Config) -> list[str]:
    """The factory's module when it lives beside the policy file, so the logged model loads anywhere."""
    if not config.training.is_factory:
        return []
    module = sys.modules.get(config.training.estimator.partition(":")[0].split(".")[0])
    path = getattr(module, "__file__", None)
    if path is None or any(part in Path(path).parts for part in ("site-packages", "dist-packages")):
        return []
    package = Path(path).parent if Path(path).name == "__init__.py" else Path(path)
    return [str(package)]


def log_model(config: Config, result: FitResult) -> Any:
    """Log the fitted model with its signature, requirements and (for a local factory) its code."""
    import mlflow
    from mlflow.models import infer_signature

    inputs = result.holdout_rows[list(result.columns)]
    common = dict(
        name="model",
        signature=infer_signature(inputs, result.scorer.predict(result.holdout_rows.head(50))),
        input_example=inputs.head(5),
        pip_requirements=model_requirements(result.model),
        code_paths=_code_paths(config) or None,
    )
    flavor = _flavor(result.model)
    # MLflow checks the input example by loading the model and predicting its 5 rows: on one thread
    with threads_for(len(common["input_example"])):
        if flavor != "sklearn":
            return getattr(mlflow, flavor).log_model(result.model, **common)
        import skops.io

        try:
            untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(result.model))
        except Exception:  # skops cannot persist every object (e.g. a lambda): pickle is MLflow's other format
            return mlflow.sklearn.log_model(result.model, serialization_format="cloudpickle", **common)
        # we trust the types we just fitted ourselves
        return mlflow.sklearn.log_model(result.model, skops_trusted_types=untrusted, **common)


def log_fit(config: Config, data: LabelledData, result: FitResult) -> tuple[str, str, str, str]:
    """Log params, metrics, datasets, the reference frame and the model in the active run.

    Returns (model_uri, model_id, train_digest, holdout_digest): a tracking server only registers a
    `models:/m-...` source when it is also told the model id. The reference frame (the exact training rows)
    is what drift is measured against later, so it is stored with the run rather than re-derived.
    """
    import mlflow

    # MLflow warns about integer columns in signatures and ambiguous local sources on every call;
    # neither applies (a column with missing values is read as float; the source is a path we name).
    warnings.filterwarnings("ignore", message=".*(Integer columns|dataset source can be interpreted).*")
    spec = data.spec
    columns = dataset_columns(spec)
    train_digest = frame_digest(result.train_rows[columns])
    holdout_digest = frame_digest(result.holdout_rows[columns])
    mlflow.log_params({
        "estimator": config.training.estimator,
        **{f"param.{k}": v for k, v in config.training.params.items()},
        "train_window": result.train_window.iso(),
        "holdout_window": result.holdout_window.iso(),
        "train_rows": len(result.train_rows),
        "holdout_rows": len(result.holdout_rows),
        "features": ",".join(spec.features)[:6000],
    })
    mlflow.log_metrics({f"holdout_{k}": v for k, v in result.holdout_metrics.items() if np.isfinite(v)})
    mlflow.log_metric("fit_seconds", result.fit_seconds)
    for context, rows, digest in (("training", result.train_rows, train_digest),
                                  ("holdout", result.holdout_rows, holdout_digest)):
        dataset = mlflow.data.from_pandas(rows[columns], source=data.origin, targets=spec.target,
                                          name=f"{config.model_name}-{context}", digest=digest)
        mlflow.log_input(dataset, context=context)
    log_frame(result.train_rows[columns], T.REFERENCE_ARTIFACT)
    info = log_model(config, result)
    return info.model_uri, info.model_id, train_digest, holdout_digest


def log_frame(frame: pd.DataFrame, artifact_path: str, run_id: str | None = None) -> None:
    """A frame as a Parquet artifact of the active run (or of `run_id`, e.g. a user project's run)."""
    import tempfile

    from mlflow.tracking import MlflowClient

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_path).name
        frame.to_parquet(path, index=False)
        if run_id is None:
            mlflow.log_artifact(str(path), str(Path(artifact_path).parent))
        else:
            MlflowClient().log_artifact(run_id, str(path), str(Path(artifact_path).parent))


def bootstrap_trigger(registry: Any, trigger: str, reason: str) -> tuple[str, str]:
    """The first version of a model is a bootstrap, whatever asked for it."""
    if registry.production() is not None:
        return trigger, reason
    return T.BOOTSTRAP, "no Production version yet: the first model that passes the absolute gate becomes Production"


def candidate_tags(*, trigger: str, reason: str, cycle_run_id: str, as_of: pd.Timestamp, train_window: Window,
                   holdout_window: Window, unit: str) -> dict[str, str]:
    """The audit tags every new version carries, whoever trained it: pending until judged. Its as_of
    reads as a date in a daily policy (`words.moment`, in `unit`): a tag the versions list shows."""
    return {T.TRIGGER: trigger, T.REASON: reason, **({T.CYCLE_RUN_ID: cycle_run_id} if cycle_run_id else {}),
            T.AS_OF: moment(as_of, unit), T.TRAIN_WINDOW: train_window.iso(), T.HOLDOUT_WINDOW: holdout_window.iso(),
            T.DECISION: T.PENDING}


def refit_tags(validated_run_id: str, window: Window, rows: int) -> dict[str, str]:
    """What a refit says about itself: the validated fit's run, and the rows it was fitted on."""
    return {T.REFIT_OF: validated_run_id, T.REFIT_ROWS: f"{window.iso()} ({rows} rows)"}


def data_time(stamp: pd.Timestamp) -> str:
    """A data time as a person reads it: the date alone at midnight."""
    return stamp.date().isoformat() if stamp == stamp.normalize() else stamp.isoformat(timespec="minutes")


def name_run(config: Config, run_id: str, version: str, trigger: str, reason: str, as_of: pd.Timestamp,
             result: FitResult, cycle_run_id: str) -> None:
    """Once the version is known: the training run named after it ("v7 · metric_threshold · as of
    2011-05-31"), with a Markdown description (`mlflow.note.content`) of why it was trained and on what."""
    from mlflow.tracking import MlflowClient

    from mlflow_retrain.adapters.tracking import run_page
    from mlflow_retrain.decide.verdicts import number

    metrics = ", ".join(f"{k} {number(v)}" for k, v in result.holdout_metrics.items() if np.isfinite(v))
    holdout = (f"- **Holdout:** `{result.holdout_window.iso()}` ({len(result.holdout_rows)} rows): {metrics}"
               if result.holdout_metrics else "- **Refit** through as of, holdout included: the gate judged the "
               "validated fit (`retrain.refit_of`)")
    lines = [f"v{version} of {config.model_name}, trained because of {trigger}: {reason}", "",
             f"- **Training window:** `{result.train_window.iso()}` ({len(result.train_rows)} rows)", holdout,
             f"- **Registered as** [v{version}]({links.model(config.model_name, version)}): its page says "
             "whether it was promoted and why"]
    if cycle_run_id:
        lines.append(f"- **Started by cycle** [`{cycle_run_id}`]({run_page(cycle_run_id)})")
    client = MlflowClient()
    client.set_tag(run_id, "mlflow.runName", f"v{version} · {trigger} · as of {data_time(as_of)}"[:250])
    client.set_tag(run_id, "mlflow.note.content", "\n".join(lines)[:8000])


def train(
    config: Config,
    registry: Any,
    *,
    as_of: str | pd.Timestamp | None = None,
    data: LabelledData | None = None,
    trigger: str = "manual",
    reason: str = "trained by hand",
    cycle_run_id: str = "",
    bootstrap: bool = True,
    follow: bool = False,
    refit_of: str = "",
) -> tuple[TrainResult, Candidate]:
    """Fit, log, register; the version is placed by the caller (`loop.moves.place`), the one module
    that moves versions. Returns what was registered, and the candidate to place.

    Fitting happens before any run or version exists, so bad data or a bad estimator writes nothing.
    With `follow` (a cycle's `mlflow run` child), every write is fenced by the cycle's lease.
    With `refit_of` (the validated fit's run id) it is that fit's refit through `as_of` (`fit`).
    """
    from mlflow_retrain.adapters.registry.lease import LEASE_ENV
    from mlflow_retrain.adapters.tracking import check_tracking, start_run

    data = data or LabelledData.load(config)
    as_of = data.resolve_as_of(as_of)
    check_tracking()
    result = fit(config, data, as_of, refit=bool(refit_of))
    generation = os.environ.get(LEASE_ENV, "")
    if follow and generation.isdigit():
        # the cycle's `mlflow run` child: it writes nothing once the cycle lost its lease (the run included)
        registry.follow(int(generation), config.registry.lease_ttl)
        registry.fence("logging the candidate")
    trigger, reason = bootstrap_trigger(registry, trigger, reason) if bootstrap else (trigger, reason)
    run_tags = {T.RUN_KIND: "train", T.TRIGGER: trigger, T.REASON: reason, T.AS_OF: as_of.isoformat(),
                T.CYCLE_RUN_ID: cycle_run_id}
    with start_run(config.experiment, f"train as of {as_of.isoformat()}", run_tags) as run:
        model_uri, model_id, train_digest, holdout_digest = log_fit(config, data, result)
    version_tags = candidate_tags(trigger=trigger, reason=reason, cycle_run_id=cycle_run_id, as_of=as_of,
                                  train_window=result.train_window, holdout_window=result.holdout_window,
                                  unit=unit_for(config.monitoring.window))
    if refit_of:
        version_tags.update(refit_tags(refit_of, result.train_window, len(result.train_rows)))
    info = registry.register(model_uri, model_id, run.info.run_id, version_tags)
    name_run(config, run.info.run_id, info.version, trigger, reason, as_of, result, cycle_run_id)
    made = Candidate(info.version, result.holdout_metrics.get(config.metric, float("nan")), as_of,
                     trigger == T.BOOTSTRAP)
    return TrainResult(
        run_id=run.info.run_id, version=info.version, stage="None", model_uri=model_uri,
        train_window=result.train_window.iso(), holdout_window=result.holdout_window.iso(),
        holdout_metrics=result.holdout_metrics, train_digest=train_digest, holdout_digest=holdout_digest,
        fit_seconds=result.fit_seconds,
    ), made
