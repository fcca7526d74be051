"""`DriftMeter` gives Evidently's numbers: the same test, score and verdict per column as the
DataDriftPreset report the cycle writes (`reports.drift_report`), on every column kind and reference
size.

Evidently's own per-column results are recorded from inside that real report run (its
`get_one_column_drift`, whose verdicts make the drifted-columns count), so the test restates none
of Evidently's rules. Evidently refuses a column with no value on one side ("An empty column ...");
`DriftMeter` leaves such a column out (no score, not drifted, not counted), so it is compared with
Evidently run on the other columns. The policy's `monitoring.drift` (columns excluded, a test and/or
threshold per column) goes to both sides through the spec, as in a cycle.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from evidently.legacy.calculations import data_drift as evidently_drift
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mlflow_retrain.adapters import reports
from mlflow_retrain.policy.config import DataConfig
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.adapters.data import LabelledData
from mlflow_retrain.measure.columns import ColumnDriftRule, DriftConfig, DriftNumbers
from mlflow_retrain.measure.drift import ColumnDrift, DriftMeter, for_evidently
from mlflow_retrain.base.errors import ConfigError

EMPTY = re.compile(r"An empty column '(.+)' was provided")


@contextmanager
def recorded_columns() -> Iterator[dict]:
    """Evidently's per-column results (test, score, verdict) of the reports run inside the block."""
    seen: dict = {}
    original = evidently_drift.get_one_column_drift

    def record(**kwargs):
        result = original(**kwargs)
        seen[result.column_name] = result
        return result

    with mock.patch.object(evidently_drift, "get_one_column_drift", record):
        yield seen


def evidently(reference: pd.DataFrame, current: pd.DataFrame, spec: DataConfig) -> tuple[DriftNumbers | None, dict]:
    """`drift_report` on the columns Evidently accepts, with its per-column results."""
    features = spec.drift.measured(spec.features)
    while features:
        rules = tuple(r for r in spec.drift.columns if r.column in features)
        narrowed = dataclasses.replace(spec, features=tuple(features), drift=DriftConfig(columns=rules),
                                       categorical=tuple(c for c in spec.categorical or () if c in features))
        with recorded_columns() as seen:
            try:
                return reports.drift_report(reference, current, narrowed), seen
            except ValueError as exc:
                refused = EMPTY.search(str(exc))
                if refused is None:
                    raise
                features.remove(refused.group(1))
    return None, {}


def same(ours: float, theirs: float) -> bool:
    """Equal scores; both NaN too (chi-square forced on one label: no degree of freedom, no p-value)."""
    return math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(ours) and math.isnan(theirs))


def assert_parity(reference: pd.DataFrame, current: pd.DataFrame, spec: DataConfig) -> list[ColumnDrift]:
    meter = DriftMeter(reference, spec)
    ours = meter.measure(current)
    columns = {c.column: c for c in meter.columns(current)}
    theirs, seen = evidently(reference, current, spec)
    where = f"reference {len(reference)} rows, current {len(current)} rows"
    assert set(columns) == set(spec.drift.measured(spec.features)), where
    assert {c for c, col in columns.items() if col.method is not None} == set(seen), where
    for name, col in columns.items():
        if name not in seen:
            assert col.method is None and math.isnan(col.score) and not col.drifted, (where, col)
            assert math.isnan(ours.column_scores[name]), (where, name)
            continue
        ev = seen[name]
        assert col.method == ev.stattest_name, (where, name, col, ev.stattest_name)
        assert col.threshold == ev.stattest_threshold, (where, name)
        assert col.drifted == ev.drift_detected, (where, name, col, ev.drift_score)
        assert same(col.score, ev.drift_score), (where, name, col, ev.drift_score)
    if theirs is None or not theirs.total_columns:  # no column has a value on both sides: nothing measured
        assert (ours.drifted_columns, ours.total_columns) == (0, 0) and math.isnan(ours.drift_share), (where, ours)
        return list(columns.values())
    assert (ours.drifted_columns, ours.total_columns) == (theirs.drifted_columns, theirs.total_columns), (where, ours)
    assert ours.drift_share == theirs.drift_share, where
    assert set(theirs.column_scores) == set(seen), where
    for name, score in theirs.column_scores.items():
        assert same(ours.column_scores[name], score), (where, name)
    return list(columns.values())


# One column of each kind, drawn as a few parameters (numpy makes the rows: hypothesis explores the
# kinds, sizes, shifts and missing shares, not 1,500 individual values).
KINDS = ("numeric", "few_values", "binary", "categorical", "two_labels", "constant", "constant_label", "flag")
MISSING = ("none", "none", "none", "one", "some", "most", "all")  # weights: an empty column rarely


def column(kind: str, rows: int, shift: float, missing: str, rng: np.random.Generator) -> pd.Series:
    if kind == "numeric":
        values = pd.Series(rng.normal(shift, 1.0, rows))
    elif kind == "few_values":  # five values, six in a shifted window: either side of the labels rule
        values = pd.Series(rng.integers(0, 5 + int(shift > 0.5), rows).astype(float) + 1)
    elif kind == "binary":
        values = pd.Series((rng.random(rows) < 0.3 + shift / 4).astype(float))
    elif kind == "categorical":
        labels = np.array(list("abcdef"))[: 3 + int(shift * 2)]
        values = pd.Series(labels[rng.integers(0, len(labels), rows)], dtype=object)
    elif kind == "two_labels":
        values = pd.Series(np.where(rng.random(rows) < 0.4 + shift / 4, "yes", "no"), dtype=object)
    elif kind == "constant":
        values = pd.Series(np.full(rows, 2.0 + (shift > 0.7)))
    elif kind == "constant_label":
        values = pd.Series(["same" if shift < 0.7 else "other"] * rows, dtype=object)
    else:  # a true/false column (drift.for_evidently turns it into labels)
        return pd.Series(rng.random(rows) < 0.5 + shift / 3)
    share = {"none": 0.0, "one": 1 / max(rows, 1), "some": 0.2, "most": 0.9, "all": 1.0}[missing]
    values[rng.random(rows) < share] = np.nan
    if missing == "one" and rows:
        values.iloc[int(rng.integers(0, rows))] = np.nan
    return values


@st.composite
def cases(draw) -> tuple[pd.DataFrame, pd.DataFrame, DataConfig]:
    reference_rows = draw(st.sampled_from([50, 999, 1000, 1001, 1500]))
    current_rows = draw(st.sampled_from([0, 1, 3, 30, 200, 200, 500]))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    reference, current, categorical = {}, {}, []
    for i, kind in enumerate(kinds):
        name = f"{kind}_{i}"
        shift = draw(st.sampled_from([0.0, 0.1, 0.6, 1.0]))
        reference[name] = column(kind, reference_rows, 0.0, draw(st.sampled_from(MISSING)), rng)
        current[name] = column(kind, current_rows, shift, draw(st.sampled_from(MISSING)), rng)
        if kind in ("categorical", "two_labels", "constant_label"):
            categorical.append(name)
    spec = DataConfig(path="-", timestamp="t", target="y", features=tuple(reference), categorical=tuple(categorical))
    return pd.DataFrame(reference), pd.DataFrame(current), spec


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_generated_frames_give_evidentlys_verdicts(case):
    for col in assert_parity(*case):  # what was covered: pytest --hypothesis-show-statistics
        event(f"{col.method or 'no values'}, {'drifted' if col.drifted else 'not drifted'}")


LABEL_KINDS = ("categorical", "two_labels", "constant_label", "flag")
# the methods Evidently accepts for each kind, and thresholds in each method's range (None: its default)
METHODS = {"labels": (None, "chisquare", "z", "jensenshannon"), "numbers": (None, "ks", "wasserstein", "jensenshannon")}
THRESHOLDS = {None: (None, 0.01, 0.3), "ks": (None, 0.2), "chisquare": (None, 0.001), "z": (None, 0.5),
              "wasserstein": (None, 0.02, 2.0), "jensenshannon": (None, 0.02, 0.5)}


@st.composite
def policy_cases(draw) -> tuple[pd.DataFrame, pd.DataFrame, DataConfig]:
    """`cases` with `monitoring.drift` drawn too: columns excluded, a method and/or threshold per column."""
    reference, current, spec = draw(cases())
    exclude, rules = [], []
    for name in spec.features:
        choice = draw(st.sampled_from(("default", "exclude", "rule", "rule")))
        if choice == "exclude" and len(exclude) < len(spec.features) - 1:
            exclude.append(name)
        elif choice == "rule":
            method = draw(st.sampled_from(METHODS["labels" if name.rsplit("_", 1)[0] in LABEL_KINDS else "numbers"]))
            threshold = draw(st.sampled_from(THRESHOLDS[method]))
            if method or threshold:
                rules.append(ColumnDriftRule(name, method, threshold))
    return reference, current, dataclasses.replace(spec, drift=DriftConfig(tuple(exclude), tuple(rules)))


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy_cases())
def test_the_policys_tests_thresholds_and_exclusions_give_evidentlys_verdicts(case):
    for col in assert_parity(*case):
        event(f"{col.method or 'no values'}, {'drifted' if col.drifted else 'not drifted'}")


@pytest.mark.parametrize("reference_rows", [50, 1500])
def test_a_method_and_threshold_per_column_on_both_sides_of_the_switch(reference_rows):
    """Each method where the default would pick another: Jensen-Shannon on a wide numeric column
    (binned, as Evidently bins it), K-S on a large reference, Wasserstein on a small one, Z on many
    labels, a threshold alone on the default test; plus an excluded column."""
    rng = np.random.default_rng(reference_rows)
    kinds = {"x": "numeric", "w": "numeric", "k": "categorical", "f": "few_values", "b": "binary", "t": "two_labels"}
    reference = pd.DataFrame({c: column(kind, reference_rows, 0.0, "none", rng) for c, kind in kinds.items()})
    current = pd.DataFrame({c: column(kind, 300, 0.3, "some", rng) for c, kind in kinds.items()})
    rules = (ColumnDriftRule("x", "jensenshannon", 0.2), ColumnDriftRule("w", "ks" if reference_rows > 1000 else "wasserstein"),
             ColumnDriftRule("k", "z", 0.5), ColumnDriftRule("f", None, 0.3))
    spec = DataConfig(path="-", timestamp="t", target="y", features=tuple(kinds), categorical=("k", "t"),
                      drift=DriftConfig(exclude=("b",), columns=rules))
    columns = {c.column: c for c in assert_parity(reference, current, spec)}
    assert set(columns) == {"x", "w", "k", "f", "t"}
    assert (columns["x"].method, columns["x"].threshold) == ("Jensen-Shannon distance", 0.2)
    assert columns["k"].method == "Z-test p_value" and columns["f"].threshold == 0.3


def test_hour_and_flag_left_out_count_only_the_other_columns():
    """The issue's case: a day against four weeks, hour of day and a working-day flag excluded. (A whole
    day holds every hour once, as the reference does: hour does not drift; the flag, one value
    against both, drifts every day.)"""
    stamps = pd.date_range("2024-01-01", periods=29 * 24, freq="h")
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"hour": stamps.hour, "workingday": (stamps.dayofweek < 5).astype(int),
                          "load": rng.normal(0, 1, len(stamps))})
    reference, current = frame.iloc[:28 * 24], frame.iloc[28 * 24:]
    spec = DataConfig(path="-", timestamp="t", target="y", features=("hour", "workingday", "load"), categorical=())
    verdicts = {c.column: c.drifted for c in DriftMeter(reference, spec).columns(current)}
    assert verdicts["workingday"] and not verdicts["hour"]
    left_out = dataclasses.replace(spec, drift=DriftConfig(exclude=("hour", "workingday")))
    (load,) = assert_parity(reference, current, left_out)
    assert load.column == "load"


def run_preset(frame: pd.DataFrame, spec: DataConfig, methods: dict) -> None:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    frame, labelled = for_evidently(frame, spec)
    definition = DataDefinition(numerical_columns=[c for c in labelled.features if c not in labelled.categorical],
                                categorical_columns=list(labelled.categorical))
    data = Dataset.from_pandas(frame, data_definition=definition)
    Report([DataDriftPreset(per_column_method=methods)]).run(data, data)


@pytest.mark.parametrize("rule, message", [
    (ColumnDriftRule("x", "chisquare"), "chisquare does not test numbers"),
    (ColumnDriftRule("k", "wasserstein"), "wasserstein does not test labels"),
    (ColumnDriftRule("flag", "ks"), "ks does not test labels"),  # a true/false column is labels
])
def test_a_method_evidently_refuses_for_the_columns_kind_is_a_config_error(rule, message):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(0, 1, 100), "k": rng.choice(list("abc"), 100), "flag": rng.random(100) < 0.5})
    spec = DataConfig(path="-", timestamp="t", target="y", features=("x", "k", "flag"), categorical=("k",),
                      drift=DriftConfig(columns=(rule,)))
    with pytest.raises(ValueError, match="isn't applicable"):  # what Evidently itself says: no policy key
        run_preset(frame, spec, {rule.column: rule.method})
    for measure in (lambda: DriftMeter(frame, spec), lambda: reports.drift_report(frame, frame, spec)):
        with pytest.raises(ConfigError, match=f"monitoring.drift.columns.{rule.column}.method {message}"):
            measure()


@pytest.mark.parametrize("reference_rows,missing", [(1001, "one"), (1500, "some"), (999, "none"), (50, "most")])
def test_every_rule_at_the_small_sample_switch(reference_rows, missing):
    """Every test of Evidently's table, on either side of the switch, which counts the reference's
    values present in each column, not its rows (1,001 rows with one missing value are 1,000)."""
    rng = np.random.default_rng(reference_rows)
    kinds = {"x": "numeric", "f": "few_values", "b": "binary", "k": "categorical", "t": "two_labels"}
    reference = pd.DataFrame({c: column(kind, reference_rows, 0.0, missing, rng) for c, kind in kinds.items()})
    current = pd.DataFrame({c: column(kind, 300, 0.3, "some", rng) for c, kind in kinds.items()})
    assert_parity(reference, current, DataConfig(path="-", timestamp="t", target="y", features=tuple(kinds),
                                                 categorical=("k", "t")))


@pytest.mark.parametrize("train_days", [20, 60])  # 480 and 1,440 hourly rows: both sides of the switch
def test_bundled_data_windows(write_policy, train_days):
    data = LabelledData.load(load_config(write_policy()))  # Jan-Sep 2011 of the bundled data, the test policy
    frame, spec = data.frame, data.spec
    time = frame[spec.timestamp]
    start = pd.Timestamp("2011-03-01")
    reference = frame[(time > start - pd.Timedelta(days=train_days)) & (time <= start)]
    for weeks in (1, 10, 28):  # a week after training, a season later, most of the data later
        end = start + pd.Timedelta(weeks=weeks)
        assert_parity(reference, frame[(time > end - pd.Timedelta(days=7)) & (time <= end)], spec)
