"""`mlflow-retrain init`: a first policy file derived from the data, with the derivation written beside
every value.

A new user knows their data and their target, not what a monitoring window or a gate threshold
should be. The suggestions here are plain arithmetic on the data's span, density and the target's
scale, so they are explainable in one comment line each, and the file they make runs a `cycle`
without edits; a user then tunes it (or runs `backtest`) with the reasons in front of them.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import textwrap
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_datetime64_any_dtype, is_numeric_dtype, is_string_dtype

from mlflow_retrain.policy.config import DataConfig
from mlflow_retrain.policy.section import check_model_name
from mlflow_retrain.measure.names import higher_is_better
from mlflow_retrain.adapters.data import column_kind, prepare_frame, read_table
from mlflow_retrain.base.errors import ConfigError, DataError

log = logging.getLogger(__name__)
ESTIMATORS = {"regression": "sklearn.ensemble.HistGradientBoostingRegressor",
              "classification": "sklearn.ensemble.HistGradientBoostingClassifier"}
METRICS = {"regression": "mae", "classification": "accuracy"}
TIME_NAMES = ("timestamp", "datetime", "date", "time", "ds", "ts")
MAX_CLASSES = 20  # a whole-number target with at most this many values is taken as classes
PARSE_SHARE = 0.95  # a text column is a time column when this share of a sample parses as datetimes
SAMPLE = 200
ROWS_PER_WINDOW = 100  # fewer rows make a window's metric mostly noise
MONITORING_SPANS = (timedelta(hours=1), timedelta(days=1), timedelta(days=7), timedelta(days=30))
MIN_WINDOWS = 20  # monitoring windows the data should hold, so triggers have a history to read
TRAINING_WINDOWS = 10  # monitoring windows a training window spans at least, when the data allows
KEEP_EDGE = 0.8  # retrain when the model's error passes this share of the naive baseline's
DAY, HOUR, MINUTE = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
# calendar columns: named like one, or few whole values set by the timestamp (hour of day, weekday, month)
CALENDAR_NAME = re.compile(r"(?:^|[^a-z])(hour|hr|hourofday|hour_of_day|weekday|dow|dayofweek|day_of_week|"
                           r"workingday|working_day|weekend|holiday|month|mnth|season|quarter)(?:[^a-z]|$)")
CALENDAR_VALUES = 31  # a calendar column holds at most this many distinct values (days of a month)
WEEKDAY_AGREEMENT = 0.95  # a per-day flag set by the weekday on this share of rows (holidays differ)


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
    gate: float
    reasons: dict[str, str]
    drift_exclude: tuple[str, ...] = ()  # calendar columns, left out of drift (monitoring.drift.exclude)
    warnings: tuple[str, ...] = ()

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

        return {k: plain(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class InitResult:
    """Where the policy went and what to run next."""

    path: str
    next_command: str
    suggestion: Suggestion

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "next_command": self.next_command, **self.suggestion.to_dict()}


def floor_span(span: timedelta) -> timedelta:
    """Whole days from a day up, whole hours from an hour, else whole minutes (at least one)."""
    for unit in (DAY, HOUR):
        if span >= unit:
            return unit * (span // unit)
    return max(MINUTE, MINUTE * (span // MINUTE))


def format_span(span: timedelta) -> str:
    """The policy file's span syntax (`30d`, `12h`, `90m`); seconds only where minutes cannot say it."""
    for unit, letter in ((DAY, "d"), (HOUR, "h"), (MINUTE, "m")):
        if span >= unit and span % unit == timedelta(0):
            return f"{span // unit}{letter}"
    return f"{span.total_seconds():g}s"


def _time_share(values: pd.Series) -> float:
    """The share of an evenly spread sample of a text column that parses as datetimes, the way the
    data check parses the timestamp (so a column found here also passes there)."""
    if not (is_string_dtype(values.dtype) and values.notna().any()):
        return 0.0
    present = values.dropna()
    sample = present.iloc[np.linspace(0, len(present) - 1, min(SAMPLE, len(present))).astype(int)].astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format": then each value is tried alone
        try:  # value by value, in UTC: a column mixing zones is still a time column (which the check refuses)
            parsed = pd.to_datetime(sample, errors="coerce", utc=True, format="mixed")
        except (ValueError, TypeError, OverflowError):  # e.g. offsets pandas refuses to mix
            return 0.0
    return float(parsed.notna().mean())


def time_columns(frame: pd.DataFrame, skip: set[str]) -> tuple[list[str], dict[str, float]]:
    """Columns typed as datetimes, and text columns that parse as datetimes (with their share)."""
    typed = [c for c in frame.columns if c not in skip and is_datetime64_any_dtype(frame[c])]
    shares = {c: _time_share(frame[c]) for c in frame.columns if c not in skip and c not in typed}
    return typed, {c: share for c, share in shares.items() if share >= PARSE_SHARE}


def _name_rank(column: str) -> int:
    name = str(column).lower()
    return 0 if name in TIME_NAMES else 1 if ("time" in name or "date" in name) else 2


def detect_timestamp(frame: pd.DataFrame, target: str, origin: str = "data") -> tuple[str, str]:
    """The time column and why: a datetime-typed column before a parsed one, then a time-like name."""
    typed, parsed = time_columns(frame, {target})
    candidates = typed or sorted(parsed, key=list(frame.columns).index)
    if not candidates:
        raise DataError(f"{origin}: no column holds datetimes (columns: {', '.join(map(str, frame.columns))}); "
                        "pass --timestamp COLUMN")
    column = min(candidates, key=_name_rank)
    how = "a datetime column" if typed else f"{parsed[column]:.0%} of a {SAMPLE}-value sample parse as datetimes"
    others = [c for c in candidates if c != column]
    also = f"; chosen by name over {', '.join(map(str, others))}" if others else ""
    return column, f"{column!r}: {how}{also}"


def detect_task(values: pd.Series) -> tuple[str, str]:
    """Classification for labels or a few whole numbers, else regression; and why."""
    name = values.name
    if is_bool_dtype(values) or not is_numeric_dtype(values):
        return "classification", f"target {name!r} is {values.dtype}: labels"
    distinct = values.dropna().unique()
    if len(distinct) <= MAX_CLASSES and bool(np.all(np.mod(distinct, 1) == 0)):
        return "classification", (f"target {name!r} takes {len(distinct)} whole values (<= {MAX_CLASSES}): classes; "
                                   "pass --task regression if they are amounts")
    return "regression", f"target {name!r} is numeric with {len(distinct)} distinct values"


@dataclass(frozen=True)
class Windows:
    """The suggested spans, and for each policy key how it was derived."""

    monitoring: timedelta
    training: timedelta
    holdout: timedelta
    max_age: timedelta
    cooldown: timedelta
    reasons: dict[str, str]


def suggest_windows(span: timedelta, rows: int, step: timedelta) -> Windows:
    """Windows from how long the data runs and how dense it is.

    Monitoring: the shortest candidate that holds enough rows for a stable metric, short enough that
    the data holds a history of them. Holdout: one of them (every row held out is a row the candidate
never learns from, and longer holdouts did not make the gate more often right:
`benchmarks/bench_gate.py`). Training: half the data, and at least ten
    monitoring windows when the data allows. Retrain anyway after ten windows; not twice in one.
    """
    per_day = rows / (span / DAY)

    def count(window: timedelta) -> str:
        return f"~{per_day * (window / DAY):,.0f} rows"

    cap = span / MIN_WINDOWS
    enough = next((w for w in MONITORING_SPANS if per_day * (w / DAY) >= ROWS_PER_WINDOW), MONITORING_SPANS[-1])
    monitoring = floor_span(max(min(enough, cap), step))  # a window shorter than the step holds no row
    names = "/".join(format_span(w) for w in MONITORING_SPANS)
    why = f"the shortest of {names} holding >= {ROWS_PER_WINDOW} rows at {per_day:,.4g} rows/day"
    if enough > cap:
        why += f", at most the span / {MIN_WINDOWS} = {format_span(floor_span(cap))} so the data holds {MIN_WINDOWS}"
    holdout = monitoring
    training = floor_span(min(max(span / 2, TRAINING_WINDOWS * monitoring), span - holdout))
    max_age = min(TRAINING_WINDOWS * monitoring, training)
    return Windows(monitoring, training, holdout, max_age, monitoring, {
        "monitoring.window": f"{why}: {count(monitoring)} each",
        "training.holdout": f"1 monitoring window ({count(holdout)}): the newest rows, kept out of training to "
                            "compare candidate and Production on the same unseen data; a longer holdout costs the "
                            "candidate the newest rows without making the gate more often right",
        "training.window": f"the larger of half the span ({format_span(floor_span(span))} / 2) and "
                           f"{TRAINING_WINDOWS} monitoring windows ({format_span(TRAINING_WINDOWS * monitoring)}), "
                           f"within the span less the holdout: {count(training)}",
        "triggers.max_age": f"{TRAINING_WINDOWS} monitoring windows, at most the training window: retrain at least "
                            "this often even when no metric fires",
        "triggers.cooldown": "one monitoring window: no second retrain on the same evidence",
    })


def _function_of(values: pd.Series, key: pd.Series) -> bool:
    """One value of the column per value of `key`, with rows to spare (a key unique per row proves nothing)."""
    groups = key.nunique()
    return groups >= 2 and len(values) >= 2 * groups and bool((values.groupby(key).nunique() <= 1).all())


def _set_by_weekday(values: pd.Series, stamps: pd.Series) -> bool:
    """One value per day, the weekday's usual one on nearly every row: a working-day flag."""
    if not _function_of(values, stamps.dt.normalize()):
        return False
    usual = values.groupby(stamps.dt.dayofweek).transform(lambda day: day.mode().iloc[0])
    return bool((usual == values).mean() >= WEEKDAY_AGREEMENT)


def _few_whole_values(values: pd.Series) -> bool:
    present = values.dropna()
    if not 2 <= present.nunique() <= CALENDAR_VALUES:
        return False
    return is_bool_dtype(present) or not is_numeric_dtype(present) or bool(np.all(np.mod(present, 1) == 0))


def calendar_columns(frame: pd.DataFrame, features: tuple[str, ...], timestamp: str) -> dict[str, str]:
    """Features that follow the calendar, each with why: a short monitoring window holds a few of
    their values and the training window all of them, so they "drift" in every window by construction."""
    stamps = frame[timestamp]
    keys = {"hour of day": stamps.dt.hour, "day of week": stamps.dt.dayofweek, "month": stamps.dt.month}
    found = {}
    for column in features:
        values = frame[column]
        if not _few_whole_values(values):
            continue
        why = ["named like a calendar field"] if CALENDAR_NAME.search(str(column).lower()) else []
        if key := next((name for name, key in keys.items() if _function_of(values, key)), None):
            why.append(f"set by the timestamp's {key}")
        elif _set_by_weekday(values, stamps):
            why.append(f"one value a day, the weekday's on >= {WEEKDAY_AGREEMENT:.0%} of rows")
        if why:
            found[column] = " and ".join(why)
    return found


def drift_exclusions(calendar: dict[str, str], features: tuple[str, ...], window: timedelta,
                     training: timedelta) -> tuple[tuple[str, ...], str | None]:
    """The calendar columns to leave out of drift and the warning that says so (none when there are
    none; kept in when they are every feature, since drift would then measure nothing)."""
    if not calendar:
        return (), None
    named = "; ".join(f"{c} ({why})" for c, why in calendar.items())
    because = (f"calendar columns: {named}. A {format_span(window)} monitoring window can hold part of their "
               f"cycle while the {format_span(training)} training window holds all of it, so they drift by the "
               "calendar alone (a one-day window: every day), not because the data changed")
    if len(calendar) == len(features):
        return (), f"{because}; every feature is one, so drift stays on all of them (its share means little)"
    return tuple(calendar), (f"{because}: left out of drift (monitoring.drift.exclude), still features of the "
                             "model; delete them there to measure their drift")


def _round(value: float) -> float:
    return float(f"{value:.3g}")


def suggest_thresholds(values: pd.Series, task: str) -> tuple[float, float, dict[str, str]]:
    """(trigger threshold, gate) against a naive baseline on the target's own scale.

    Regression: the median absolute deviation (MAD) is the median miss of always predicting the
    median; a candidate must beat it (gate) and Production is retrained once its MAE passes 80% of
    it. Classification: the same on the error rate of always predicting the majority class.
    """
    if task == "classification":
        majority = float(values.value_counts(normalize=True).iloc[0])
        if majority >= 1:
            raise DataError(f"target {values.name!r} holds one class only; a classifier needs two")
        threshold = _round(1 - KEEP_EDGE * (1 - majority))
        base = f"always predicting the majority class scores accuracy {majority:.3g}"
        return threshold, _round(majority), {
            "triggers.metric_threshold": f"{base}; retrain when accuracy falls below 1 - {KEEP_EDGE} x (1 - "
                                         f"{majority:.3g}) = {threshold}, an error rate {KEEP_EDGE:.0%} of that",
            "validation": f"{base}; a candidate must do better (accuracy > {_round(majority)})",
        }
    y = values.astype(float)
    deviation = (y - y.median()).abs()
    mad = float(deviation.median()) or float(deviation.mean())  # mostly one value: the mean miss instead
    if mad == 0:
        raise DataError(f"target {values.name!r} is constant; there is nothing to predict")
    base = (f"the target's median absolute deviation (MAD) is {mad:.4g}: the median miss of always predicting "
            f"its median {y.median():.4g}")
    return _round(KEEP_EDGE * mad), _round(mad), {
        "triggers.metric_threshold": f"{base}; retrain when MAE passes {KEEP_EDGE} x MAD",
        "validation": f"{base}; a candidate must beat it (MAE < MAD)",
    }


def default_model_name(data_path: Path) -> str:
    """The data's name without suffixes, as a registry-friendly name (`sales/2024.csv.gz` -> `2024`)."""
    name = Path(data_path).resolve().name.split(".")[0]
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") or "model"


def suggest(frame: pd.DataFrame, *, target: str, timestamp: str | None = None, task: str | None = None,
            model_name: str, data_path: str, origin: str = "data") -> Suggestion:
    """Everything `init` writes, derived from the rows with the same checks a cycle will apply."""
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
    exclude = tuple(c for c in frame.columns if c in {*typed, *parsed, *unusable})
    if exclude:
        reasons["data.exclude"] = (f"{', '.join(map(str, exclude))}: dates, values that are neither numbers nor "
                                   "labels, or no value at all; derive features from them in the data, or drop "
                                   "them from exclude")
    checked, spec, counts = prepare_frame(frame, DataConfig(path=data_path, timestamp=timestamp, target=target,
                                                            exclude=exclude), origin)
    reasons["data.duplicates"] = (f"{counts.repeats:,} exact repeat(s) and {counts.conflicts:,} row(s) with "
                                  f"conflicting labels in {counts.rows:,} rows. keep: train on every row (alike "
                                  "rows with other labels are the noise a classifier's probabilities learn); drop: "
                                  "drop exact repeats; refuse: stop on either")
    if task is None:
        task, reasons["task"] = detect_task(checked[target])
    numeric = tuple(c for c in spec.features if c not in spec.categorical)
    reasons["data.features"] = (f"features left out: every column but timestamp, target and exclude. From the dtypes, "
                                f"numeric: {', '.join(map(str, numeric)) or '-'}; "
                                f"categorical: {', '.join(map(str, spec.categorical)) or '-'}")
    stamps = checked[timestamp]
    steps = stamps.drop_duplicates().diff().dropna()
    if steps.empty:
        raise DataError(f"{origin}: every row has the same {timestamp!r}; init needs rows over time")
    step = steps.median().to_pytimedelta()
    windows = suggest_windows((stamps.iloc[-1] - stamps.iloc[0]).to_pytimedelta(), len(checked), step)
    threshold, gate, gate_reasons = suggest_thresholds(checked[target], task)
    drift_exclude, warning = drift_exclusions(calendar_columns(checked, spec.features, timestamp), spec.features,
                                              windows.monitoring, windows.training)
    if warning:
        reasons["monitoring.drift.exclude"] = warning
    return Suggestion(
        model_name=model_name, data_path=data_path, target=target, timestamp=timestamp, task=task,
        metric=METRICS[task], estimator=ESTIMATORS[task], numeric=numeric, categorical=spec.categorical,
        exclude=exclude, rows=len(checked), start=stamps.iloc[0], end=stamps.iloc[-1], step=step,
        monitoring_window=windows.monitoring, training_window=windows.training, holdout=windows.holdout,
        max_age=windows.max_age, cooldown=windows.cooldown, threshold=threshold, gate=gate,
        reasons={**reasons, **windows.reasons, **gate_reasons}, drift_exclude=drift_exclude,
        warnings=(warning,) if warning else (),
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
        "monitoring:",
        *why("monitoring.window"),
        f"  window: {format_span(s.monitoring_window)}",
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
        f"  {gate}: {s.gate}",
    ]
    return "\n".join(lines) + "\n"


def init(data: Path, *, target: str, out: Path, timestamp: str | None = None, task: str | None = None,
         model_name: str | None = None, force: bool = False) -> InitResult:
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
                         model_name=model_name or default_model_name(data), data_path=path)
    command = f"mlflow-retrain cycle --config {shlex.quote(str(out))}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(suggestion, command))
    for warning in suggestion.warnings:
        log.warning("%s", warning)
    return InitResult(str(out), command, suggestion)
