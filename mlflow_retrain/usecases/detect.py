"""What a table says about the policy it needs, for `init`: its time column, task and metric, windows
that fit its span and density, its calendar columns and row identifiers, and (without a walk-forward)
thresholds from the target's own scale.

Each answer comes with its reason and numbers, which `init` writes beside the value.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_datetime64_any_dtype, is_numeric_dtype, is_string_dtype

from mlflow_retrain.base.errors import DataError

TIME_NAMES = ("timestamp", "datetime", "date", "time", "ds", "ts")
MAX_CLASSES = 20  # a whole-number target with at most this many values is taken as classes
PARSE_SHARE = 0.95  # a text column is a time column when this share of a sample parses as datetimes
SAMPLE = 200
ROWS_PER_WINDOW = 100  # fewer rows make a window's metric mostly noise
MONITORING_SPANS = (timedelta(hours=1), timedelta(days=1), timedelta(days=7), timedelta(days=30))
MIN_WINDOWS = 20  # monitoring windows the data should hold, so triggers have a history to read
TRAINING_WINDOWS = 10  # monitoring windows a training window spans at least, when the data allows
MINORITY_ROWS = 50  # rows of the rarest class a classification window should hold
IMBALANCED = 0.35  # a rarer class below this share of rows: roc_auc, not accuracy
KEEP_EDGE = 0.8  # retrain when the model's error passes this share of the naive baseline's
DAY, HOUR, MINUTE = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
# calendar columns: named like one, or few whole values set by the timestamp (hour of day, weekday, month)
CALENDAR_NAME = re.compile(r"(?:^|[^a-z])(hour|hr|hourofday|hour_of_day|weekday|dow|dayofweek|day_of_week|"
                           r"workingday|working_day|weekend|holiday|month|mnth|season|quarter)(?:[^a-z]|$)")
CALENDAR_VALUES = 31  # a calendar column holds at most this many distinct values (days of a month)
WEEKDAY_AGREEMENT = 0.95  # a per-day flag set by the weekday on this share of rows (holidays differ)


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


def suggest_windows(span: timedelta, rows: int, step: timedelta, needed: int = ROWS_PER_WINDOW) -> Windows:
    """Windows from how long the data runs and how dense it is.

    Monitoring: the shortest candidate that holds enough rows for a stable metric, short enough that
    the data holds a history of them. Holdout: one of them (every row held out is a row the candidate
never learns from, and longer holdouts did not make the gate more often right:
`benchmarks/bench_gate.py`). Training: half the data, and at least ten
    monitoring windows when the data allows. Retrain anyway after ten windows; not twice in one.
    `needed`: the rows a window must hold (more for a rare class, `rows_needed`).
    """
    per_day = rows / (span / DAY)

    def count(window: timedelta) -> str:
        return f"~{per_day * (window / DAY):,.0f} rows"

    cap = span / MIN_WINDOWS
    enough = next((w for w in MONITORING_SPANS if per_day * (w / DAY) >= needed), MONITORING_SPANS[-1])
    monitoring = floor_span(max(min(enough, cap), step))  # a window shorter than the step holds no row
    names = "/".join(format_span(w) for w in MONITORING_SPANS)
    why = f"the shortest of {names} holding >= {needed} rows at {per_day:,.4g} rows/day"
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


def rows_needed(values: pd.Series, task: str) -> tuple[int, str]:
    """Rows a monitoring window must hold: ROWS_PER_WINDOW, or enough for MINORITY_ROWS of the rarest
    class (a roc_auc on a window with a handful of positives is noise); and why."""
    if task != "classification":
        return ROWS_PER_WINDOW, ""
    share = float(values.value_counts(normalize=True).iloc[-1])
    needed = max(ROWS_PER_WINDOW, math.ceil(MINORITY_ROWS / share))
    return needed, f"{needed} rows hold ~{MINORITY_ROWS} of the rarest class ({share:.0%} of rows)"


def choose_metric(values: pd.Series, task: str) -> tuple[str, str]:
    """mae for regression; roc_auc for two classes with a minority under IMBALANCED (accuracy there
    is mostly the majority's rate), accuracy otherwise; and why."""
    if task != "classification":
        return "mae", "regression: mean absolute error, in the target's own unit"
    shares = values.value_counts(normalize=True)
    if len(shares) == 2 and shares.iloc[-1] < IMBALANCED:
        return "roc_auc", (f"two classes, the rarer {shares.index[-1]!r} on {shares.iloc[-1]:.0%} of rows (< "
                           f"{IMBALANCED:.0%}): roc_auc ranks the rare class's rows, where accuracy would reward "
                           f"always answering {shares.index[0]!r} ({shares.iloc[0]:.0%})")
    return "accuracy", (f"{len(shares)} classes, the rarest on {shares.iloc[-1]:.0%} of rows: balanced enough for "
                        "accuracy")


# a column that numbers the rows: named like a row index, or one distinct value per row
INDEX_NAME = re.compile(r"^(unnamed: ?\d+|rownames|row_?names?|index|idx|row_?id|row|id|uuid|guid|.*_id)$")
UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.IGNORECASE)


def row_identifiers(frame: pd.DataFrame, skip: set[str]) -> dict[str, str]:
    """Columns that identify a row rather than describe it, each with why: whole numbers or text with
    one distinct value per row (a counter like `rownames`, an order id), UUIDs, or a monotone whole
    number named like an index. A model learns nothing from them that holds for the next rows."""
    found = {}
    for column in frame.columns:
        if column in skip:
            continue
        values = frame[column].dropna()
        if len(values) < 2:
            continue
        whole = is_numeric_dtype(values) and not is_bool_dtype(values) and bool(np.all(np.mod(values, 1) == 0))
        text = is_string_dtype(values) or values.dtype == object
        unique = values.nunique() == len(values)
        monotone = whole and (values.is_monotonic_increasing or values.is_monotonic_decreasing)
        if text and values.astype(str).str.fullmatch(UUID).mean() >= PARSE_SHARE:
            found[column] = "holds UUIDs"
        elif unique and (whole or text) and len(values) >= ROWS_PER_WINDOW:
            found[column] = f"one distinct value per row ({'a counter' if monotone else 'an identifier'})"
        elif monotone and INDEX_NAME.match(str(column).lower()):
            found[column] = "a monotone whole number named like a row index"
    return found


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


def suggest_thresholds(values: pd.Series, task: str, metric: str = "") -> tuple[float, float, dict[str, str]]:
    """(trigger threshold, gate) against a naive baseline on the target's own scale, when no
    walk-forward could measure a model (`calibrate.py`).

    Regression: the median absolute deviation (MAD) is the median miss of always predicting the
    median; a candidate must beat it (gate) and Production is retrained once its MAE passes 80% of
    it. Classification: the same on the error rate of always predicting the majority class; on
    roc_auc, the 0.5 of a coin.
    """
    if metric == "roc_auc":
        base = "no walk-forward measured a model; a predictor without skill scores roc_auc 0.5"
        return 0.5, 0.5, {"triggers.metric_threshold": f"{base}; retrain when a window falls to it",
                          "validation": f"{base}; a candidate must do better (roc_auc > 0.5)"}
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
