"""Score a model on a window: metrics, drift against its own training rows, Evidently reports.

The result is a plain `Evaluation` the controller and the monitor consume; the MLflow run and the
HTML reports are the human-facing side of the same numbers.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlflow_retrain.adapters import models
from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.config import Config
from mlflow_retrain.adapters.data import LabelledData, Window, frame_digest
from mlflow_retrain.decide import PromotionDecision, Scores
from mlflow_retrain.measure.columns import DriftNumbers
from mlflow_retrain.decide import judge as gate_judge
from mlflow_retrain.base.errors import ModelError, RegistryError
from mlflow_retrain.measure.metrics import per_row_loss, score
from mlflow_retrain.measure.naive import naive_predictions
from mlflow_retrain.adapters.models import Scorer, dataset_columns
from mlflow_retrain.adapters.registry import PRODUCTION, STAGING, Registry, VersionInfo
from mlflow_retrain.adapters.tracking import start_run

if TYPE_CHECKING:
    from mlflow_retrain.measure.estimate import PerformanceEstimator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """Predictions of one model on one frame, with the per-row view the gate's bootstrap needs."""

    y_true: np.ndarray
    y_pred: np.ndarray
    metrics: dict[str, float]
    latency_ms: float


@dataclass(frozen=True)
class Evaluation:
    model_uri: str
    version: str | None
    window: str
    rows: int
    metrics: dict[str, float]
    latency_ms: float
    drift: DriftNumbers | None = None
    run_id: str | None = None
    reports: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "drift"}
        if self.drift is not None:
            out["drift_share"] = self.drift.drift_share
            out["drifted_columns"] = self.drift.drifted_columns
            out["total_columns"] = self.drift.total_columns
        return out


def default_model_uri(config: Config, stage: str = PRODUCTION) -> str:
    """`models:/name/Production` with stages, `models:/name@production` on aliases alone."""
    if config.registry.use_stages:
        return f"models:/{config.model_name}/{stage}"
    alias = config.registry.production_alias if stage == PRODUCTION else config.registry.staging_alias
    return f"models:/{config.model_name}@{alias}"


def resolve_version(config: Config, registry: Registry, model_uri: str) -> VersionInfo | None:
    """The registry version behind a `models:/` URI, checked so an unknown stage is a clear error."""
    prefix = f"models:/{config.model_name}"
    if not model_uri.startswith(prefix):
        return None
    rest = model_uri[len(prefix):]
    registry.require()
    if rest.startswith("@"):
        alias = rest[1:]
        stage = next((s for s, a in registry.aliases.items() if a == alias), None)
        found = registry.in_stage(stage) if stage else None
        if found is None:
            raise RegistryError(f"model {config.model_name!r} has no version with alias {alias!r}")
        return found
    key = rest.strip("/")
    if key.isdigit():
        return registry.get(key)
    stage = {"production": PRODUCTION, "staging": STAGING}.get(key.lower())
    if stage is None:
        raise RegistryError(f"unknown stage {key!r} in {model_uri}; use Production, Staging or a version number")
    found = registry.in_stage(stage)
    if found is None:
        raise RegistryError(f"model {config.model_name!r} has no {stage} version; run a cycle or promote one")
    return found


def registered(config: Config, data: LabelledData, version: str) -> Scorer:
    """A registered version of this policy's model, ready to score rows of `data`."""
    return models.load(f"models:/{config.model_name}/{version}", config, data.spec)


def run_of(model_uri: str, version: VersionInfo | None) -> str:
    if version is not None and version.run_id:
        return version.run_id
    from mlflow.models import get_model_info

    return get_model_info(model_uri).run_id


def load_reference(run_id: str) -> pd.DataFrame:
    """The exact rows the model was trained on, stored with its training run."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=T.REFERENCE_ARTIFACT,
                                                       dst_path=tmp)
            return pd.read_parquet(path)
        except (MlflowException, OSError) as exc:
            raise ModelError(f"the training rows of run {run_id} ({T.REFERENCE_ARTIFACT}) cannot be read, and drift "
                             f"is measured against them: {str(exc).splitlines()[0][:200]}") from None


def score_predictions(config: Config, data: LabelledData, rows: pd.DataFrame, y_pred: np.ndarray,
                      proba: np.ndarray | None, latency_ms: float = 0.0) -> Scored:
    """Predictions already made on `rows` (the monitor predicts a version's whole span at once),
    scored by the one metric function, with the probabilities the metric may need (roc_auc)."""
    y_true = data.target(rows)
    return Scored(y_true, np.asarray(y_pred), score(config.task, y_true, y_pred, proba), latency_ms)


def score_rows(config: Config, data: LabelledData, model: Scorer, rows: pd.DataFrame) -> Scored:
    """The one scoring function: Production and candidates go through it on the same frame.

    Its `metrics` hold only what is defined on `rows`, so `.metrics.get(config.metric)` is the
    metric or None (a gap: one class for roc_auc, one row for r2), never an exception.
    """
    started = time.perf_counter()
    y_pred, proba = model.predict_with_proba(rows)
    return score_predictions(config, data, rows, y_pred, proba, (time.perf_counter() - started) * 1000)


def label_free(config: Config, data: LabelledData, model: Scorer, reference: pd.DataFrame) -> PerformanceEstimator:
    """The model's label-free estimator (`estimate.py`), prepared on `reference`: its holdout rows,
    labelled and never trained on."""
    from mlflow_retrain.measure.estimate import PerformanceEstimator

    pred, proba = model.predict_with_proba(reference)
    return PerformanceEstimator.fit(data.features(reference), pred, data.target(reference), metric=config.metric,
                                    task=config.task, probabilities=proba,
                                    categorical=tuple(data.spec.categorical or ()))


def estimate_rows(estimator: PerformanceEstimator, data: LabelledData, model: Scorer,
                  rows: pd.DataFrame) -> float | None:
    """The metric on `rows` estimated from their features and the model's outputs, not their labels."""
    if not len(rows):
        return None
    pred, proba = model.predict_with_proba(rows)
    return estimator.estimate(data.features(rows), pred, proba)


NAIVE_HISTORY = pd.Timedelta(days=35)  # what a naive baseline repeats: a week's season, with weeks to spare


def score_naive(config: Config, data: LabelledData, rows: pd.DataFrame) -> tuple[Scored, str] | None:
    """The naive baseline (`measure.naive`) on the holdout `rows`, from the labelled rows just before
    them; None when no row precedes the holdout."""
    stamps = rows[data.spec.timestamp]
    first = stamps.iloc[0]
    history = data.rows(Window(first - NAIVE_HISTORY, first))
    history = history[(history[data.spec.timestamp] < first) & history[data.spec.target].notna()]
    if history.empty:
        return None
    naive = naive_predictions(config.task, history[data.spec.timestamp], data.target(history), stamps)
    return score_predictions(config, data, rows, naive.y_pred, naive.proba), naive.kind


def judge(config: Config, data: LabelledData, rows: pd.DataFrame, candidate: Scorer,
          production: Scorer | None) -> tuple[PromotionDecision, dict[str, Any]]:
    """Score both models on ONE frame with ONE metric function; the core's gate decides on the numbers.

    Takes fitted models so the controller (models from the registry) and the backtest (models in
    memory) validate with the same code.
    """
    def numbers(model: Scorer) -> tuple[Scored, Scores]:
        scored = score_rows(config, data, model, rows)
        # the gate reads its metric by name: undefined on this holdout (one class for roc_auc) it is
        # NaN, which fails the gate's checks instead of raising
        defined = {config.metric: math.nan, **scored.metrics}
        return scored, Scores(defined, per_row_loss(config.metric, scored.y_true, scored.y_pred))

    cand, cand_numbers = numbers(candidate)
    base, base_numbers = (None, None) if production is None else numbers(production)
    # the naive baseline: for its gate, and beside a first model's error for scale
    wanted = production is None or config.validation.max_ratio_to_naive is not None
    naive = score_naive(config, data, rows) if wanted else None
    naive_numbers = None if naive is None else Scores(naive[0].metrics, np.empty(0))
    decision = gate_judge(config, cand_numbers, base_numbers, naive_numbers)
    # hashed over the columns the training run hashes its holdout dataset by, so a cycle's digest can
    # be matched against the candidate's run: the same rows give the same digest
    digest = frame_digest(rows[dataset_columns(data.spec)])
    evidence = {"holdout_digest": digest, "holdout_rows": len(rows), "candidate": cand.metrics,
                "production": None if base is None else base.metrics}
    if naive is not None:
        evidence["naive"], evidence["naive_kind"] = naive[0].metrics, naive[1]
    return decision, evidence


def evaluate(
    config: Config,
    *,
    model_uri: str | None = None,
    as_of: str | pd.Timestamp | None = None,
    window: Window | None = None,
    data: LabelledData | None = None,
    with_reports: bool = True,
    log_run: bool = True,
    out_dir: Path | None = None,
) -> Evaluation:
    """Score a model on the monitoring window ending at `as_of` (or an explicit window).

    Everything that can fail on user input (data, window, model URI) is checked before a run is
    opened, so a bad call leaves no half-written run behind.
    """
    data = data or LabelledData.load(config)
    registry = Registry(config)
    model_uri = model_uri or default_model_uri(config)
    version = resolve_version(config, registry, model_uri)
    if window is None:
        window = Window.ending(data.resolve_as_of(as_of), config.monitoring.window)
    rows = data.cut(window, "monitoring window")
    model = models.load(model_uri, config, data.spec)
    scored = score_rows(config, data, model, rows)
    drift: DriftNumbers | None = None
    reports: list[str] = []
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="mlflow-retrain-reports-"))
    if with_reports:
        # imported here: every cycle imports this module, and only reports need Evidently's wrappers
        from mlflow_retrain.adapters.reports import PREDICTION, drift_report, quality_report

        out_dir.mkdir(parents=True, exist_ok=True)
        reference = load_reference(run_of(model_uri, version))
        drift_path, quality_path = out_dir / "data_drift.html", out_dir / "model_quality.html"
        drift = drift_report(reference, rows, data.spec, drift_path, config=config, version=version, window=window)
        scored_frame = rows.assign(**{PREDICTION: scored.y_pred})
        quality_report(scored_frame, data.spec, config.task, quality_path, config=config, version=version, window=window)
        reports = [str(drift_path), str(quality_path)]
    result = Evaluation(
        model_uri=model_uri, version=version.version if version else None, window=window.iso(), rows=len(rows),
        metrics=scored.metrics, latency_ms=scored.latency_ms, drift=drift, reports=reports,
    )
    if not log_run:
        return result
    return _log(config, result)


def _log(config: Config, result: Evaluation) -> Evaluation:
    import mlflow

    tags = {T.RUN_KIND: "evaluate", "model_uri": result.model_uri, "model_version": result.version or "",
            "window": result.window}
    with start_run(config.experiment, f"evaluate v{result.version or '?'} {result.window}", tags) as run:
        # prefixed: `mlflow run -e evaluate` already logged its own `model_uri` parameter
        mlflow.log_params({"eval.model_uri": result.model_uri, "eval.window": result.window, "eval.rows": result.rows})
        mlflow.log_metrics({k: v for k, v in result.metrics.items() if np.isfinite(v)})
        mlflow.log_metric("latency_ms", result.latency_ms)
        if result.drift is not None:
            mlflow.log_metrics({"drift_share": result.drift.drift_share,
                                "drifted_columns": result.drift.drifted_columns})
        for path in result.reports:
            mlflow.log_artifact(path, "reports")
    return Evaluation(**{**result.__dict__, "run_id": run.info.run_id})
