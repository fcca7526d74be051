"""Feature drift per window, fast: the tests, thresholds and verdicts of Evidently's DataDriftPreset.

Why it is built this way: docs/design.md#measure-drift.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

from mlflow_retrain.measure.columns import ColumnDriftRule, Columns, DriftNumbers

SMALL_REFERENCE = 1000  # a column with at most this many reference values gets the p-value tests
FEW_VALUES = 5  # a numeric column with at most this many distinct values is tested as labels
BINNED = 20  # Jensen-Shannon bins a numeric column with more distinct reference values than this

Spec = TypeVar("Spec", bound=Columns)


def for_evidently(frame: pd.DataFrame, spec: Spec) -> tuple[pd.DataFrame, Spec]:
    """True/false features as labels: Evidently 0.7's numeric tests subtract values (numpy refuses
    for booleans) and bin them (a window where the flag never changes has no range to bin)."""
    flags = [c for c in spec.features if c in frame.columns and pd.api.types.is_bool_dtype(frame[c])]
    if not flags:
        return frame, spec
    labels = tuple(dict.fromkeys([*(spec.categorical or ()), *flags]))
    return frame.astype({c: str for c in flags}), dataclasses.replace(spec, categorical=labels)


def drift_columns(frame: pd.DataFrame, spec: Spec) -> tuple[pd.DataFrame, Spec]:
    """The features drift is measured on (`monitoring.drift.exclude` left out) as Evidently reads them
    (`for_evidently`), after checking the policy's drift columns against the resolved features."""
    measured = tuple(spec.drift.measured(spec.features))
    narrowed = dataclasses.replace(spec, features=measured,
                                   categorical=tuple(c for c in spec.categorical or () if c in measured))
    frame, labelled = for_evidently(frame[list(measured)], narrowed)
    spec.drift.check(spec.features, labelled.categorical or ())
    return frame, labelled


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift in one window; `method` is Evidently's name of the test (None: no values)."""

    column: str
    method: str | None
    threshold: float
    score: float
    drifted: bool


class _Reference:
    """One column of the reference, prepared once: its present values and their counts."""

    def __init__(self, name: str, values: pd.Series, categorical: bool, rule: ColumnDriftRule | None = None):
        self.name, self.categorical = name, categorical
        self.method = None if rule is None or rule.method is None else METHODS[rule.method]
        self.threshold = None if rule is None else rule.threshold
        self.values = _present(values, categorical)
        self.size = len(self.values)
        self.counts = _counts(self.values)
        self.norm = 0.0 if categorical or not self.size else max(float(np.std(self.values)), 0.001)

    @cached_property
    def ordered(self) -> tuple[np.ndarray, np.ndarray]:
        """The values sorted and, at each, the integral of the reference's CDF from the smallest value
        to it: a window's Wasserstein distance then reads the reference by `searchsorted` alone."""
        values = np.sort(self.values)
        shares = np.arange(1, len(values)) / len(values)  # the CDF between one value and the next
        return values, np.concatenate([[0.0], np.cumsum(np.diff(values) * shares)])

    def distinct_with(self, counts: dict) -> int:
        """Distinct values of both sides; exact up to FEW_VALUES + 1, the most any rule looks at."""
        if len(self.counts) > FEW_VALUES:
            return len(self.counts)
        return len(self.counts.keys() | counts.keys())


def _present(values: pd.Series, categorical: bool) -> np.ndarray:
    every, present = _with_mask(values, categorical)
    return every[present]


def _with_mask(values: pd.Series, categorical: bool) -> tuple[np.ndarray, np.ndarray]:
    """The column's values as the tests read them, and which rows hold one (not missing, finite)."""
    if categorical:
        labels = values.replace([np.inf, -np.inf], np.nan)
        return labels.to_numpy(), labels.notna().to_numpy()
    numbers = values.to_numpy(dtype=float, na_value=np.nan)
    return numbers, np.isfinite(numbers)


def _counts(values: np.ndarray) -> dict:
    return dict(pd.Series(values).value_counts())  # of an array: no zero counts


@dataclass(frozen=True)
class _Test:
    name: str  # Evidently's display name, as in the report's ValueDrift entries
    threshold: float
    drifted: Callable[[float, float], bool]
    score: Callable[[_Reference, np.ndarray, dict], float]
    counts: bool  # reads the window's value counts (else only its values)


def _labels(reference: dict, current: dict) -> list:
    """Both sides' values in one fixed order: a set of strings iterates in the process's hash-seed order,
    and the tests' sums would then differ in their last bits from run to run."""
    return sorted(reference.keys() | current.keys(), key=repr)


def _ks(ref: _Reference, current: np.ndarray, counts: dict) -> float:
    return float(stats.ks_2samp(ref.values, current).pvalue)


def _chisquare(ref: _Reference, current: np.ndarray, counts: dict) -> float:
    keys = _labels(ref.counts, counts)
    scale = len(current) / ref.size
    expected = [ref.counts.get(key, 0) * scale for key in keys]
    observed = [counts.get(key, 0) for key in keys]
    with np.errstate(divide="ignore", invalid="ignore"):  # a new value: expected 0, p = 0 (as Evidently)
        return float(stats.chisquare(observed, expected).pvalue)


def _z(ref: _Reference, current: np.ndarray, counts: dict) -> float:
    keys = sorted(ref.counts.keys() | counts.keys())
    if len(keys) == 1:  # one and the same value on both sides
        return 1.0
    n1, n2 = ref.size, len(current)
    p1 = float(n1 - ref.counts.get(keys[0], 0)) / n1
    p2 = float(n2 - counts.get(keys[0], 0)) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def _wasserstein(ref: _Reference, current: np.ndarray, counts: dict) -> float:
    return float(_cdf_distance(*ref.ordered, current) / ref.norm)


def _cdf_distance(u: np.ndarray, area: np.ndarray, current: np.ndarray) -> float:
    """scipy's `wasserstein_distance(reference, current)` (the integral of |F - G| over both CDFs), from the
    reference sorted once with the integral of its CDF at each value (`_Reference.ordered`): between
    two of the window's values G is a constant g, and F, monotone, crosses g once, so each piece is two
    differences of that integral. O(window x log reference) per window where scipy's is linear in the
    reference; equal to scipy's to about 1e-14 relative. Why: docs/design.md#measure-drift."""
    v = np.sort(np.asarray(current, dtype=float))
    n, m = len(u), len(v)
    starts, ends = np.concatenate([[min(u[0], v[0])], v]), np.concatenate([v, [max(u[-1], v[-1])]])
    g = np.arange(m + 1) / m  # G on [starts[j], ends[j])
    reach = -(-np.arange(m + 1) * n // m)  # F >= j/m from the reach-th smallest reference value on
    cross = np.clip(np.where(reach == 0, -np.inf, u[np.clip(reach - 1, 0, n - 1)]), starts, ends)

    def integral(x: np.ndarray) -> np.ndarray:  # of F from u[0] to x
        k = u.searchsorted(x, "right")
        last = np.maximum(k - 1, 0)
        return np.where(k == 0, 0.0, area[last] + (x - u[last]) * k / n)

    at_start, at_cross, at_end = integral(starts), integral(cross), integral(ends)
    below = g * (cross - starts) - (at_cross - at_start)  # F < g before the crossing
    above = (at_end - at_cross) - g * (ends - cross)  # F >= g after it
    return float(np.sum(below + above))


def _jensenshannon(ref: _Reference, current: np.ndarray, counts: dict) -> float:
    if not ref.categorical and len(ref.counts) > BINNED:
        edges = np.histogram_bin_edges(np.concatenate([ref.values, current]), bins="sturges")
        return float(distance.jensenshannon(np.histogram(ref.values, edges)[0] / ref.size,
                                            np.histogram(current, edges)[0] / len(current)))
    keys = _labels(ref.counts, counts)
    shares = [ref.counts.get(key, 0) / ref.size for key in keys]
    now = [counts.get(key, 0) / len(current) for key in keys]
    return float(distance.jensenshannon(shares, now))


KS = _Test("K-S p_value", 0.05, operator.le, _ks, False)
CHISQUARE = _Test("chi-square p_value", 0.05, operator.lt, _chisquare, True)
Z = _Test("Z-test p_value", 0.05, operator.lt, _z, True)
WASSERSTEIN = _Test("Wasserstein distance (normed)", 0.1, operator.ge, _wasserstein, False)
JENSENSHANNON = _Test("Jensen-Shannon distance", 0.1, operator.ge, _jensenshannon, True)
# by the stattest names of `monitoring.drift.columns.<col>.method` (columns.DRIFT_METHODS)
METHODS = {"ks": KS, "chisquare": CHISQUARE, "z": Z, "wasserstein": WASSERSTEIN, "jensenshannon": JENSENSHANNON}


def _choose(ref: _Reference, n_values: int) -> _Test:
    """Evidently's default test for a column (`_get_default_stattest`)."""
    if ref.size <= SMALL_REFERENCE:
        if n_values <= 2:
            return Z
        return CHISQUARE if ref.categorical or n_values <= FEW_VALUES else KS
    if ref.categorical or n_values <= FEW_VALUES:
        return JENSENSHANNON
    return WASSERSTEIN


class DriftMeter:
    """Drift of any window against one reference (a model's training rows), reference prepared once."""

    def __init__(self, reference: pd.DataFrame, spec: Columns):
        reference, labelled = drift_columns(reference, spec)
        self.features = list(labelled.features)
        self.spec = dataclasses.replace(spec, features=labelled.features)
        categorical = set(labelled.categorical or ())
        self.references = [_Reference(c, reference[c], c in categorical, spec.drift.rule(c)) for c in self.features]

    def columns(self, current: pd.DataFrame) -> list[ColumnDrift]:
        """Each measured feature's test, score and verdict in `current`, as Evidently's report has them."""
        current, _ = for_evidently(current[self.features], self.spec)
        return [self._column(ref, _present(current[ref.name], ref.categorical)) for ref in self.references]

    def sliced(self, frame: pd.DataFrame) -> Callable[[int, int], list[ColumnDrift]]:
        """`columns` of the rows `lo:hi` of `frame`, for the many windows of one frame (the monitor's):
        the frame is prepared once and each window only sliced from it; the same numbers."""
        current, _ = for_evidently(frame[self.features], self.spec)
        prepared = [(ref, *_with_mask(current[ref.name], ref.categorical)) for ref in self.references]

        def columns(lo: int, hi: int) -> list[ColumnDrift]:
            return [self._column(ref, every[lo:hi][present[lo:hi]]) for ref, every, present in prepared]

        return columns

    def measure(self, current: pd.DataFrame) -> DriftNumbers:
        return summarize(self.columns(current))

    @staticmethod
    def _column(ref: _Reference, current: np.ndarray) -> ColumnDrift:
        if not ref.size or not len(current):
            return ColumnDrift(ref.name, None, math.nan, math.nan, False)
        # by default a numeric column with more distinct reference values than FEW_VALUES gets K-S or
        # Wasserstein, which read the values: its window's counts are not needed
        default = ref.categorical or len(ref.counts) <= FEW_VALUES
        counts = _counts(current) if (ref.method.counts if ref.method else default) else {}
        test = ref.method or _choose(ref, ref.distinct_with(counts))
        threshold = test.threshold if ref.threshold is None else ref.threshold
        score = test.score(ref, current, counts)
        return ColumnDrift(ref.name, test.name, threshold, score, bool(test.drifted(score, threshold)))


def summarize(columns: list[ColumnDrift]) -> DriftNumbers:
    """The window's share of drifted columns, over the columns measured (NaN when none is)."""
    measured = [c for c in columns if c.method is not None]
    drifted = sum(c.drifted for c in measured)
    share = drifted / len(measured) if measured else math.nan
    return DriftNumbers(share, drifted, len(measured), {c.column: c.score for c in columns})
