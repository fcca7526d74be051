"""`DriftMeter` gives Evidently's numbers: the same test, score and verdict per column as the
DataDriftPreset report the cycle writes (`reports.drift_report`), on every column kind and reference
size.

Evidently's own per-column results are recorded from inside that real report run (its
`get_one_column_drift`, whose verdicts make the drifted-columns count), so the test restates none
of Evidently's rules. Evidently refuses a column with no value on one side ("An empty column ...");
`DriftMeter` leaves such a column out (no score, not drifted, not counted), so it is compared with
Evidently run on the other columns.
"""

from __future__ import annotations

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

from mlflow_retrain import reports
from mlflow_retrain.config import DataConfig, load_config
from mlflow_retrain.data import LabelledData
from mlflow_retrain.decide import DriftNumbers
from mlflow_retrain.drift import ColumnDrift, DriftMeter

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
    features = list(spec.features)
    while features:
        narrowed = DataConfig(path=spec.path, timestamp=spec.timestamp, target=spec.target, features=tuple(features),
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


def assert_parity(reference: pd.DataFrame, current: pd.DataFrame, spec: DataConfig) -> list[ColumnDrift]:
    meter = DriftMeter(reference, spec)
    ours = meter.measure(current)
    columns = {c.column: c for c in meter.columns(current)}
    theirs, seen = evidently(reference, current, spec)
    where = f"reference {len(reference)} rows, current {len(current)} rows"
    assert set(columns) == set(spec.features), where
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
        assert math.isclose(col.score, ev.drift_score, rel_tol=1e-9, abs_tol=1e-12), (where, name, col, ev.drift_score)
    if theirs is None:  # no column has a value on both sides: nothing measured
        assert (ours.drifted_columns, ours.total_columns) == (0, 0) and math.isnan(ours.drift_share), (where, ours)
        return list(columns.values())
    assert (ours.drifted_columns, ours.total_columns) == (theirs.drifted_columns, theirs.total_columns), (where, ours)
    assert ours.drift_share == theirs.drift_share, where
    assert set(theirs.column_scores) == set(seen), where
    for name, score in theirs.column_scores.items():
        assert math.isclose(ours.column_scores[name], score, rel_tol=1e-9, abs_tol=1e-12), (where, name)
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
    else:  # a true/false column (reports.for_evidently turns it into labels)
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
