"""A model's pinned requirements read the installed packages' module map once per process
(`adapters.train.model_requirements`): the scan of every package's file list cost 0.3-0.9 s per fit
in a process fitting many (the demo's replay, `serve`). A module the map does not know (a package
installed since, or a module of no package) makes it read the map again."""

from __future__ import annotations

import importlib.metadata

from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline

from mlflow_retrain.adapters import train


class Own(HistGradientBoostingRegressor):
    """An estimator of a module no installed package holds (this test's)."""


def test_the_package_map_is_read_once_and_again_for_a_module_it_does_not_know(monkeypatch) -> None:
    real, reads = importlib.metadata.packages_distributions, []

    def counted() -> dict[str, list[str]]:
        reads.append(1)
        return real()

    monkeypatch.setattr(importlib.metadata, "packages_distributions", counted)
    train._owners.cache_clear()
    pipeline = Pipeline([("model", HistGradientBoostingRegressor(max_iter=5))])
    first = train.model_requirements(pipeline)
    assert {r.split("==")[0] for r in first} == {"numpy", "pandas", "scikit-learn"}
    assert train.model_requirements(pipeline) == first and len(reads) == 1  # was a read per model
    assert train.model_requirements(Own()) == first and len(reads) == 2  # unknown module: read again
    train._owners.cache_clear()
