"""`mlflow-retrain init`: a first policy file derived from the data, with the derivation written beside
every value (what the data says is read in `detect.py`).

A new user knows their data and their target, not what a monitoring window or a gate threshold
should be. Windows come from the data's span and density; the trigger, the gate and the training
window from a quick walk-forward of the estimator against a naive baseline (`calibrate.py`). Each
value's comment gives its numbers, and the file runs a `cycle` without edits.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import textwrap
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from mlflow_retrain.policy.config import DataConfig
from mlflow_retrain.policy.section import check_model_name
from mlflow_retrain.measure.names import higher_is_better
from mlflow_retrain.adapters.tables import column_kind, prepare_frame, read_table
from mlflow_retrain.base.errors import ConfigError, DataError
from mlflow_retrain.adapters.data import LabelledData
from mlflow_retrain.usecases.calibrate import Calibration, calibrate, trial_config
from mlflow_retrain.usecases.detect import (calendar_columns, choose_metric, detect_task, detect_timestamp,
                                            drift_exclusions, format_span, row_identifiers, rows_needed,
                                            suggest_thresholds, suggest_windows, time_columns)

log = logging.getLogger(__name__)
ESTIMATORS = {"regression": "sklearn.ensemble.HistGradientBoostingRegressor",
              "classification": "sklearn.ensemble.HistGradientBoostingClassifier"}
BUDGET = 30.0  # seconds of walk-forward fits `init` spends by default (`--budget`)


@dataclass(frozen=True)
class Suggestion:
    """A policy derived from one table, and for each derived key the reason with its numbers."""

    model_name: str
    data_path: str
    target: str
    timestamp: str
    task: str
    metric: str
    estimator: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    exclude: tuple[str, ...]
    rows: int
    start: pd.Timestamp
    end: pd.Timestamp
    step: timedelta
    monitoring_window: timedelta
    training_window: timedelta
    holdout: timedelta
    max_age: timedelta
    cooldown: timedelta
    threshold: float
    gate: float | None
    reasons: dict[str, str]
    drift_exclude: tuple[str, ...] = ()  # calendar columns, left out of drift (monitoring.drift.exclude)
    warnings: tuple[str, ...] = ()
    ratio_to_naive: float | None = None  # validation.max_ratio_to_naive
    calibration: Calibration | None = field(default=None, repr=False)  # the walk-forward behind the values

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)

    def to_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, timedelta):
                return format_span(value)
            if isinstance(value, pd.Timestamp):
                return value.isoformat()
            return list(value) if isinstance(value, tuple) else value

        out = {k: plain(v) for k, v in self.__dict__.items() if k != "calibration"}
        if self.calibration is not None:
            c = self.calibration
            out["walk_forward"] = {"fits": c.fits, "seconds": round(c.seconds, 2), "naive": c.naive_kind,
                                   "folds": [{"as_of": f.as_of.isoformat(), "holdout": f.holdout, "naive": f.naive,
                                              "windows": list(f.windows)} for f in c.folds]}
        return out


@dataclass(frozen=True)
class InitResult:
    """Where the policy went and what to run next."""

    path: str
    next_command: str
    suggestion: Suggestion

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "next_command": self.next_command, **self.suggestion.to_dict()}


def default_model_name(data_path: Path) -> str:
    """The data's name without suffixes, as a registry-friendly name (`sales/2024.csv.gz` -> `2024`)."""
    name = Path(data_path).resolve().name.split(".")[0]
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") or "model"


def suggest(frame: pd.DataFrame, *, target: str, timestamp: str | None = None, task: str | None = None,
            model_name: str, data_path: str, origin: str = "data", budget: float | None = BUDGET) -> Suggestion:
    """Everything `init` writes, derived from the rows with the same checks a cycle will apply.

    `budget`: seconds for the walk-forward that sets the trigger, the gate and the training window
    (`calibrate.py`); None skips it (then they come from the target's spread, as with too few rows).
    """
    columns = ", ".join(map(str, frame.columns))
    for option, column in (("--target", target), ("--timestamp", timestamp)):
        if column is not None and column not in frame.columns:
            raise DataError(f"{origin}: {option} {column!r} is not a column; the data has {columns}")
    if timestamp == target:
        raise DataError(f"--timestamp and --target both name {target!r}; the time and the label are two columns")
    reasons: dict[str, str] = {}
    if timestamp is None:
        timestamp, reasons["data.timestamp"] = detect_timestamp(frame, target, origin)
    typed, parsed = time_columns(frame, {target, timestamp})
    unusable = [c for c in frame.columns if c not in {target, timestamp, *typed, *parsed}
                and (column_kind(frame[c]) is None or frame[c].isna().all())]
    identifiers = row_identifiers(frame, {target, timestamp, *typed, *parsed, *unusable})
    exclude = tuple(c for c in frame.columns if c in {*typed, *parsed, *unusable, *identifiers})
    warnings = [f"{c!r} left out of the features (data.exclude): it {why}, which identifies a row rather than "
                "describes it; delete it from exclude to keep it" for c, why in identifiers.items()]
    if exclude:
        said = [f"{c} ({why})" for c, why in identifiers.items()]
        other = [str(c) for c in exclude if c not in identifiers]
        reasons["data.exclude"] = "; ".join(
            ([f"{', '.join(other)}: dates, values that are neither numbers nor labels, or no value at all; derive "
              "features from them in the data, or drop them from exclude"] if other else []) +
            ([f"row identifiers: {', '.join(said)}"] if said else []))
    checked, spec, counts = prepare_frame(frame, DataConfig(path=data_path, timestamp=timestamp, target=target,
                                                            exclude=exclude), origin)
    reasons["data.duplicates"] = (f"{counts.repeats:,} exact repeat(s) and {counts.conflicts:,} row(s) with "
                                  f"conflicting labels in {counts.rows:,} rows. keep: train on every row (alike "
                                  "rows with other labels are the noise a classifier's probabilities learn); drop: "
                                  "drop exact repeats; refuse: stop on either")
    if task is None:
        task, reasons["task"] = detect_task(checked[target])
    metric, reasons["monitoring.metric"] = choose_metric(checked[target], task)
    numeric = tuple(c for c in spec.features if c not in spec.categorical)
    reasons["data.features"] = (f"features left out: every column but timestamp, target and exclude. From the dtypes, "
                                f"numeric: {', '.join(map(str, numeric)) or '-'}; "
                                f"categorical: {', '.join(map(str, spec.categorical)) or '-'}")
    stamps = checked[timestamp]
    steps = stamps.drop_duplicates().diff().dropna()
    if steps.empty:
        raise DataError(f"{origin}: every row has the same {timestamp!r}; init needs rows over time")
    step = steps.median().to_pytimedelta()
    needed, why_needed = rows_needed(checked[target], task)
    windows = suggest_windows((stamps.iloc[-1] - stamps.iloc[0]).to_pytimedelta(), len(checked), step, needed)
    if why_needed:
        reasons["monitoring.window"] = why_needed
    data = LabelledData(checked, spec, origin)
    config = trial_config(data, task=task, metric=metric, estimator=ESTIMATORS[task],
                          monitoring=windows.monitoring, holdout=windows.holdout)
    calibration = None if budget is None else calibrate(data, config, shorter=windows.training, budget=budget)
    if calibration is not None:
        threshold, gate, ratio, training = (calibration.threshold, calibration.gate, calibration.ratio,
                                            calibration.training_window)
        gate_reasons = calibration.reasons
        warnings += [calibration.warning] if calibration.warning else []
    else:
        threshold, gate, gate_reasons = suggest_thresholds(checked[target], task, metric)
        ratio, training = None, windows.training
        if budget is not None:  # the data held too little for one fit point with a holdout
            gate_reasons = {k: f"too few rows for a walk-forward, so from the target: {v}"
                            for k, v in gate_reasons.items()}
    drift_exclude, warning = drift_exclusions(calendar_columns(checked, spec.features, timestamp), spec.features,
                                              windows.monitoring, training)
    if warning:
        reasons["monitoring.drift.exclude"] = warning
        warnings.append(warning)
    window_reasons = {k: (f"{reasons[k]}; {v}" if k in reasons else v) for k, v in windows.reasons.items()}
    return Suggestion(
        model_name=model_name, data_path=data_path, target=target, timestamp=timestamp, task=task,
        metric=metric, estimator=ESTIMATORS[task], numeric=numeric, categorical=spec.categorical,
        exclude=exclude, rows=len(checked), start=stamps.iloc[0], end=stamps.iloc[-1], step=step,
        monitoring_window=windows.monitoring, training_window=training, holdout=windows.holdout,
        max_age=windows.max_age, cooldown=windows.cooldown, threshold=threshold, gate=gate,
        reasons={**reasons, **window_reasons, **gate_reasons}, drift_exclude=drift_exclude,
        warnings=tuple(warnings), ratio_to_naive=ratio, calibration=calibration,
    )


def _scalar(value: Any) -> str:
    """A YAML scalar: plain when that reads back as the same string, else JSON-quoted (valid YAML)."""
    if isinstance(value, str) and not (re.fullmatch(r"[A-Za-z_][\w./-]*", value) and value.lower() not in {
            "true", "false", "yes", "no", "on", "off", "null", "y", "n"}):
        return json.dumps(value)
    return str(value)


def render(s: Suggestion, next_command: str) -> str:
    """The policy as YAML, each derived value under a comment saying how it was derived."""
    def why(key: str, indent: str = "  ") -> list[str]:
        return [f"{indent}# {line}" for line in textwrap.wrap(s.reasons.get(key, ""), 100 - len(indent))]

    bound, gate = ("min", "min_metric") if s.higher_is_better else ("max", "max_metric")
    lines = [
        f"# Written by `mlflow-retrain init` from {s.data_path}: {s.rows:,} rows,",
        f"# {s.start.isoformat()} .. {s.end.isoformat()}, a row every {format_span(s.step)} (median step).",
        "# Each derived value says how; edit any of them (`mlflow-retrain backtest` compares policies).",
        f"# Next: {next_command}",
        f"model_name: {_scalar(s.model_name)}",
        *why("task", ""),
        f"task: {s.task}",
        "data:",
        f"  path: {_scalar(s.data_path)}",
        *why("data.timestamp"),
        f"  timestamp: {_scalar(s.timestamp)}",
        f"  target: {_scalar(s.target)}",
        *why("data.features"),
        *why("data.exclude"),
        *([f"  exclude: [{', '.join(_scalar(c) for c in s.exclude)}]"] if s.exclude else []),
        *why("data.duplicates"),
        "  duplicates: keep",
        "training:",
        f"  estimator: {s.estimator}",
        *why("training.window"),
        f"  window: {format_span(s.training_window)}",
        *why("training.holdout"),
        f"  holdout: {format_span(s.holdout)}",
        "  refit_on_pass: true   # a candidate that passes the gate is fitted again through as_of, holdout included",
        "monitoring:",
        *why("monitoring.window"),
        f"  window: {format_span(s.monitoring_window)}",
        *why("monitoring.metric"),
        f"  metric: {s.metric}",
        *why("monitoring.drift.exclude"),
        *([f"  drift: {{exclude: [{', '.join(_scalar(c) for c in s.drift_exclude)}]}}"] if s.drift_exclude else
          ["  # drift: {exclude: [column, ...]}   # features left out of drift (a calendar column drifts always)"]),
        "triggers:",
        *why("triggers.metric_threshold"),
        f"  metric_threshold: {{{bound}: {s.threshold}}}",
        *why("triggers.max_age"),
        f"  max_age: {format_span(s.max_age)}",
        *why("triggers.cooldown"),
        f"  cooldown: {format_span(s.cooldown)}",
        "  # data_drift: {max_drift_share: 0.5}   # also retrain when half the features drift (Evidently)",
        "validation:",
        *why("validation"),
        *([f"  {gate}: {s.gate}"] if s.gate is not None else []),
        *([f"  max_ratio_to_naive: {s.ratio_to_naive}"] if s.ratio_to_naive is not None else []),
    ]
    return "\n".join(lines) + "\n"


def init(data: Path, *, target: str, out: Path, timestamp: str | None = None, task: str | None = None,
         model_name: str | None = None, force: bool = False, budget: float | None = BUDGET) -> InitResult:
    """Read the data, suggest, write the commented policy to `out` (never over a file unless forced)."""
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    if model_name is not None:
        check_model_name(model_name, "--model-name")
    frame = read_table(data)
    # a relative data path resolves against the policy file: relative when the data sits beside or
    # below it (the folder moves as one), absolute otherwise
    where, home = data.resolve(), out.resolve().parent
    path = where.relative_to(home).as_posix() if where.is_relative_to(home) else str(where)
    suggestion = suggest(frame, target=target, timestamp=timestamp, task=task, origin=str(data),
                         model_name=model_name or default_model_name(data), data_path=path, budget=budget)
    # the history first, in order (`replay`): a first cycle as of the newest row would leave every
    # later replay behind the registry's history
    command = f"mlflow-retrain replay --config {shlex.quote(str(out))}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(suggestion, command))
    for warning in suggestion.warnings:
        log.warning("%s", warning)
    return InitResult(str(out), command, suggestion)
