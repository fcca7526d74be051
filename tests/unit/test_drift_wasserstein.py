"""The monitor's Wasserstein distance from a reference prepared once (`drift._cdf_distance`) is scipy's
`wasserstein_distance` to 1e-12 relative: continuous values, ties, rounded values, signed zeros, a few
labels, one value on a side; and `DriftMeter` reports it (over the reference's std) for a wide
numeric column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mlflow_retrain.measure.drift import DriftMeter, _cdf_distance, _Reference
from mlflow_retrain.policy.config import DataConfig


def _sides(rng: np.random.Generator, kind: str, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    u, v = rng.normal(size=n), rng.normal(rng.normal(), rng.uniform(0.5, 2), size=m)
    if kind == "rounded":
        return u.round(1), v.round(1)
    if kind == "signed zeros":
        return (np.where(rng.random(n) < 0.3, -0.0, u.round(0)), np.where(rng.random(m) < 0.3, 0.0, v.round(0)))
    if kind == "labels":
        return rng.integers(0, 3, n).astype(float), rng.integers(0, 4, m).astype(float)
    return u, v


@pytest.mark.parametrize("kind", ["continuous", "rounded", "signed zeros", "labels"])
def test_the_prepared_reference_gives_scipys_distance(kind):
    rng = np.random.default_rng(len(kind))
    for n, m in [(1, 1), (1, 7), (9, 1), *((int(rng.integers(2, 6000)), int(rng.integers(2, 400))) for _ in range(40))]:
        u, v = _sides(rng, kind, n, m)
        reference = _Reference("x", pd.Series(u), False)
        assert _cdf_distance(*reference.ordered, v) == pytest.approx(stats.wasserstein_distance(u, v), rel=1e-12, abs=1e-15)


def test_the_meter_reports_scipys_normed_distance_for_a_wide_numeric_column():
    rng = np.random.default_rng(7)
    reference = pd.DataFrame({"x": rng.normal(size=5000).round(2)})
    spec = DataConfig(path="-", timestamp="t", target="y", features=("x",), categorical=())
    meter = DriftMeter(reference, spec)
    for shift in (0.0, 0.05, 0.5):
        window = pd.DataFrame({"x": rng.normal(shift, 1, size=300)})
        (column,) = meter.columns(window)
        expected = stats.wasserstein_distance(reference.x, window.x) / max(float(np.std(reference.x)), 0.001)
        assert column.method == "Wasserstein distance (normed)" and column.drifted == (expected >= 0.1)
        assert column.score == pytest.approx(expected, rel=1e-12)
