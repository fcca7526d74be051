"""`init`'s quick walk-forward: the configured estimator fitted at a few points of the user's file, so
the trigger threshold, the gate and the training window come from the model's own errors and a
naive baseline's (`measure.naive`), not from the target's spread.

Why it is built this way: docs/design.md#usecases-calibrate.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from mlflow_retrain.adapters.data import LabelledData, Window
from mlflow_retrain.adapters.train import FitResult, fit
from mlflow_retrain.base.errors import DataError, TrainingError
from mlflow_retrain.measure.metrics import score, worse_tail
from mlflow_retrain.measure.naive import naive_predictions
from mlflow_retrain.measure.names import higher_is_better
from mlflow_retrain.policy.config import (Config, DataConfig, MonitoringConfig, RegistryConfig, TrainingConfig,
                                          TriggersConfig, ValidationConfig)

log = logging.getLogger(__name__)
FOLDS = 4  # fit points; each serves the monitoring windows up to the next one
SCORED_SHARE = 0.4  # the newest share of the span the folds serve; the older rows are for training
SHORTER_EDGE = 0.02  # a shorter training window must err this much less than all history to be chosen
HEADROOM = 1.1  # the naive ratio's limit above the model's worst fold
LEAK = 0.1  # a model erring under this share of the naive baseline's error on every fold: a leaked target?
BROKEN = 2.0  # an absolute error limit at this many times the naive baseline's worst: a broken model


@dataclass(frozen=True)
class Fold:
    """One fit of the walk-forward: its holdout error and the naive baseline's there, and its
    errors on the monitoring windows it then serves."""

    as_of: pd.Timestamp
    holdout: float
    naive: float | None
    windows: tuple[float, ...]


@dataclass(frozen=True)
class Calibration:
    """What the walk-forward measured, and the values with their reasons."""

    training_window: timedelta
    threshold: float
    gate: float | None  # max_metric (errors) or min_metric (scores)
    ratio: float | None  # validation.max_ratio_to_naive
    folds: tuple[Fold, ...]
    naive_kind: str
    fits: int
    seconds: float
    reasons: dict[str, str]
    warning: str | None = None  # the model lost to the naive baseline


def _round(value: float) -> float:
    return float(f"{value:.3g}")


def _fmt(values: list[float] | tuple[float, ...]) -> str:
    return ", ".join(f"{v:.4g}" for v in values)


def fold_points(first: pd.Timestamp, last: pd.Timestamp, window: timedelta, holdout: timedelta) -> list[pd.Timestamp]:
    """Up to FOLDS fit points over the newest SCORED_SHARE of the span, each serving at least one
    monitoring window; none when the data holds too little for one fit with a holdout."""
    region = (last - first) * SCORED_SHARE
    count = min(FOLDS, int(region / pd.Timedelta(window)))
    if count < 1 or (last - region) - first <= pd.Timedelta(holdout):
        return []
    serve = region / count
    return [last - region + serve * k for k in range(count)]


def _windows(data: LabelledData, config: Config, model: FitResult, start: pd.Timestamp, end: pd.Timestamp,
             ) -> tuple[float, ...]:
    """The fitted model's metric on each monitoring window of `(start, end]` (undefined ones left out)."""
    step = pd.Timedelta(config.monitoring.window)
    out = []
    for at in range(int((end - start) / step)):
        rows = data.rows(Window(start + step * at, start + step * (at + 1)))
        if len(rows):
            pred, proba = model.scorer.predict_with_proba(rows)
            value = score(config.task, data.target(rows), pred, proba).get(config.metric)
            if value is not None:
                out.append(value)
    return tuple(out)


def _naive(data: LabelledData, config: Config, holdout: Window) -> tuple[float | None, str]:
    """The naive baseline's metric on the holdout's rows, from every row before them."""
    rows, before = data.rows(holdout), data.rows(Window(data.first - pd.Timedelta(1), holdout.start))
    if rows.empty or before.empty:
        return None, "naive"
    stamp = data.spec.timestamp
    naive = naive_predictions(config.task, before[stamp], data.target(before), rows[stamp])
    return score(config.task, data.target(rows), naive.y_pred, naive.proba).get(config.metric), naive.kind


def walk_forward(data: LabelledData, config: Config, windows: dict[str, timedelta], budget: float,
                 ) -> tuple[dict[str, list[Fold]], str, int, float]:
    """Fit each candidate training window at each fold point, the oldest point first, until the
    budget is spent; a point where a window cannot be fitted is skipped."""
    last = data.last
    points = fold_points(data.first, last, config.monitoring.window, config.training.holdout)
    folds: dict[str, list[Fold]] = {name: [] for name in windows}
    started, fits, kind = time.perf_counter(), 0, "naive"
    progress = tqdm(total=len(points) * len(windows), desc="init: walk-forward", unit="fit", leave=False,
                    disable=None)
    # one OpenMP thread: small fits on a busy machine ran 40x slower with a thread per core
    with threadpool_limits(1), progress:
        for k, point in enumerate(points):
            if fits and time.perf_counter() - started > budget:
                log.info("init: the %.0f s budget ended the walk-forward after %d of %d points", budget, k,
                         len(points))
                break
            serve_end = points[k + 1] if k + 1 < len(points) else last
            here = {}
            for name, span in windows.items():
                trial = dataclasses.replace(config, training=dataclasses.replace(config.training, window=span))
                try:
                    result = fit(trial, data, point)
                except (DataError, TrainingError) as exc:  # e.g. one class in an early training window
                    log.info("init: no fit at %s: %s", point.isoformat(), exc)
                    break
                naive, kind = _naive(data, trial, result.holdout_window)
                here[name] = Fold(point, result.holdout_metrics.get(config.metric, math.nan), naive,
                                  _windows(data, trial, result, point, serve_end))
                fits += 1
                progress.update(1)
            else:  # a point counts when every window was fitted there
                for name, fold in here.items():
                    folds[name].append(fold)
    return folds, kind, fits, time.perf_counter() - started


def trial_config(data: LabelledData, *, task: str, metric: str, estimator: str, monitoring: timedelta,
                 holdout: timedelta) -> Config:
    """The policy the walk-forward fits with: the data's resolved columns, the suggested windows."""
    spec: DataConfig = data.spec
    return Config(model_name="init", experiment="init", task=task, data=spec,
                  training=TrainingConfig(estimator=estimator, holdout=holdout),
                  monitoring=MonitoringConfig(window=monitoring, metric=metric), triggers=TriggersConfig(),
                  validation=ValidationConfig(), registry=RegistryConfig())


def calibrate(data: LabelledData, config: Config, *, shorter: timedelta, budget: float) -> Calibration | None:
    """The walk-forward and the values it sets; None when the data holds too little for one fold.

    Training window: all history (the whole span) unless `shorter` erred less on the same windows.
    Trigger: the worse-tail (p90 of an error, p10 of a score) of the chosen window's per-window
    metric. Gate: errors get a limit relative to the naive baseline (`max_ratio_to_naive`) and a
    broken-model limit; scores a floor below the model's worst fold toward the prior's.
    """
    span = data.last - data.first
    everything = pd.Timedelta(span).ceil("D").to_pytimedelta()
    windows = {"all": everything, **({"shorter": shorter} if shorter < everything - config.training.holdout else {})}
    folds, kind, fits, seconds = walk_forward(data, config, windows, budget)
    used = len(folds["all"])
    if not used:
        return None
    hib = higher_is_better(config.metric)

    def served(name: str) -> list[float]:
        return [e for fold in folds[name] for e in fold.windows]

    def mean(name: str) -> float:
        return float(np.mean(served(name))) if served(name) else math.nan

    # a near tie goes to all history: the choice is made on a few windows, and more rows rarely hurt
    better = "shorter" in folds and (1 - mean("shorter") < (1 - SHORTER_EDGE) * (1 - mean("all")) if hib
                                     else mean("shorter") < (1 - SHORTER_EDGE) * mean("all"))
    chosen = "shorter" if better else "all"
    metric, named = config.metric, {"all": f"all history ({everything.days}d)", "shorter": f"{shorter.days}d"}
    tried = "; ".join(f"{named[n]}: mean {metric} {mean(n):.4g} on {len(served(n))} windows" for n in folds)
    reasons = {"training.window": f"walk-forward over {used} fit point(s), {fits} fits in {seconds:.0f} s: {tried}. "
                                  f"Chosen: {named[chosen]}" + ("" if better else
                                                                f" (a shorter window did not err {SHORTER_EDGE:.0%} less)")}
    holdouts = [f.holdout for f in folds[chosen] if math.isfinite(f.holdout)]
    errors = served(chosen) or holdouts
    if not (errors and holdouts):  # the metric undefined everywhere (one class in each window)
        return None
    threshold = _round(worse_tail(errors, higher_is_better=hib))
    tail = "p10" if hib else "p90"
    reasons["triggers.metric_threshold"] = (
        f"the {tail} of the model's {metric} over {len(errors)} monitoring windows after its fits (range "
        f"{min(errors):.4g} .. {max(errors):.4g}, mean {np.mean(errors):.4g}): retrain when a window is worse "
        f"than 90% of a model's windows were")
    # paired with the holdouts fold by fold: a fold without either leaves the baseline out
    paired = [f for f in folds[chosen] if math.isfinite(f.holdout) and f.naive is not None]
    naives = [f.naive for f in paired] if len(paired) == len(holdouts) else []
    gate, ratio = _gate(hib, metric, holdouts, naives, kind, reasons)
    warning = _warning(config, [h / n for h, n in zip(holdouts, naives) if n > 0] if not hib else [], kind)
    return Calibration(training_window=windows[chosen], threshold=threshold, gate=gate, ratio=ratio,
                       folds=tuple(folds[chosen]), naive_kind=kind, fits=fits, seconds=seconds, reasons=reasons,
                       warning=warning)


def _warning(config: Config, ratios: list[float], kind: str) -> str | None:
    """What a user should look at when the model's error is far from the naive baseline's either way."""
    if ratios and max(ratios) < LEAK:
        return (f"{config.training.estimator} erred at most {max(ratios):.2g}x the {kind} baseline on the "
                f"walk-forward: a feature may carry the target itself (a part or a sum of it, a later value); "
                "check the features and add such columns to data.exclude")
    if ratios and max(ratios) > 1:
        return (f"{config.training.estimator} erred up to {max(ratios):.3g}x the {kind} baseline on the "
                "walk-forward: its features do not carry what the baseline repeats (a lag of the target would); "
                "the gate was widened so a first model passes")
    return None


def _gate(hib: bool, metric: str, holdouts: list[float], naives: list[float], kind: str,
          reasons: dict[str, str]) -> tuple[float | None, float | None]:
    """(absolute gate, naive ratio) from the folds' holdout numbers, their reasons added to `reasons`."""
    seen = f"the model's holdout {metric} at the fit points: {_fmt(holdouts)}; the {kind} baseline's: {_fmt(naives)}"
    if hib:  # a score (roc_auc, accuracy): a floor between the model's worst fold and the baseline's
        worst, floor = min(holdouts), max(naives) if naives else 0.0
        gate = _round(max(floor, worst - 0.25 * (worst - floor)))
        reasons["validation"] = (f"{seen}. min_metric {gate}: below the model's worst fold {worst:.4g} by a quarter "
                                 f"of its edge over the baseline ({floor:.4g}), so a first model passes and one no "
                                 "better than the baseline fails. A score does not grow with the target's level, "
                                 "so no naive ratio")
        return gate, None
    gate = _round(BROKEN * max(holdouts + naives))
    guard = (f"max_metric {gate}: {BROKEN:g}x the worst holdout {metric} of model and baseline, a broken-model "
             "guard (a first model is placed on it alone)")
    if not naives or min(naives) <= 0:  # a baseline without error would refuse every model by ratio
        none = "" if not naives else "; the baseline repeated a holdout exactly, so no ratio to it"
        reasons["validation"] = f"{seen}{none}. {guard}"
        return gate, None
    ratios = [h / n for h, n in zip(holdouts, naives)]
    ratio = max(1.0, math.ceil(100 * HEADROOM * max(ratios)) / 100)
    why = ("no worse than the naive baseline" if ratio == 1.0 else
           f"the model lost to the naive baseline on a fold, so {HEADROOM:g}x its worst ratio; better features "
           "would let this be 1.0")
    reasons["validation"] = (
        f"{seen}; model / baseline: {_fmt(ratios)}. max_ratio_to_naive {ratio:g}: a candidate's {metric} at most "
        f"{ratio:g}x the {kind} baseline's on the same holdout rows ({why}); it follows the target's level, which "
        f"an absolute limit does not. {guard}")
    return gate, ratio
