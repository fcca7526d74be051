"""Feature drift per window, fast: the same statistics Evidently's DataDriftPreset picks by default.

The monitor measures drift for hundreds of windows; one Evidently Report per window costs about a
second (mostly building the report), while the statistics themselves take microseconds. For a
reference of more than 1,000 rows Evidently uses the normed Wasserstein distance for numeric
columns with more than 5 values and the Jensen-Shannon distance otherwise, both with threshold 0.1,
and counts a drifted column when the distance is >= 0.1. We compute exactly that, with the
reference prepared once per model. Small references use other tests (KS, chi-square): for those we
call Evidently itself, so the numbers never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

from mlflow_retrain.config import DataConfig
from mlflow_retrain.decide import DriftNumbers
from mlflow_retrain.reports import drift_report

THRESHOLD = 0.1
MIN_REFERENCE = 1000


@dataclass
class _Column:
    name: str
    values: np.ndarray
    norm: float
    categorical: bool


class DriftMeter:
    """Drift of any window against one reference (a model's training rows), reference prepared once."""

    def __init__(self, reference: pd.DataFrame, spec: DataConfig):
        self.reference = reference
        self.spec = spec
        # like Evidently, missing values take no part in a column's drift statistic
        present = {c: reference[c].dropna().to_numpy() for c in spec.features}
        self.columns = [
            _Column(c, present[c], max(float(np.std(present[c])) if c not in spec.categorical else 0, 0.001),
                    c in spec.categorical)
            for c in spec.features
        ]

    def measure(self, current: pd.DataFrame) -> DriftNumbers:
        if len(self.reference) <= MIN_REFERENCE:
            return drift_report(self.reference, current, self.spec)
        scores = {col.name: self._score(col, current[col.name].dropna().to_numpy()) for col in self.columns}
        drifted = sum(score >= THRESHOLD for score in scores.values())
        return DriftNumbers(drifted / len(scores), drifted, len(scores), scores)

    def _score(self, col: _Column, current: np.ndarray) -> float:
        if not len(current) or not len(col.values):
            return 0.0  # a column with no values in the window cannot be said to drift
        if not col.categorical and len(np.unique(np.concatenate([col.values, current]))) > 5:
            return float(stats.wasserstein_distance(col.values, current) / col.norm)
        return _jensenshannon(col.values, current, numeric=not col.categorical)


def _jensenshannon(reference: np.ndarray, current: np.ndarray, numeric: bool) -> float:
    """Evidently's binning: Sturges histogram for numeric columns with > 20 values, else value shares."""
    if numeric and len(np.unique(reference)) > 20:
        bins = np.histogram_bin_edges(np.concatenate([reference, current]), bins="sturges")
        ref = np.histogram(reference, bins)[0] / len(reference)
        cur = np.histogram(current, bins)[0] / len(current)
    else:
        keys = np.unique(np.concatenate([reference, current]))
        ref = _shares(reference, keys)
        cur = _shares(current, keys)
    return float(distance.jensenshannon(ref, cur))


def _shares(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    found, counts = np.unique(values, return_counts=True)
    out = np.zeros(len(keys))
    out[np.searchsorted(keys, found)] = counts
    return out / len(values)
