"""A prediction on few rows runs on one OpenMP thread (`adapters.models.threads_for`): threads
started and spinning for every tree cost 20-100x the CPU of the rows on a busy two-core machine."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_info, threadpool_limits

from mlflow_retrain.adapters.models import ONE_THREAD_ROWS, Scorer, threads_for


class Recording(HistGradientBoostingRegressor):
    """A real gradient boosting model that notes the OpenMP threads it may use when it predicts."""

    def predict(self, X):
        self.threads = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"]
        return super().predict(X)


def test_few_rows_predict_on_one_thread_many_on_all_with_the_same_numbers() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=ONE_THREAD_ROWS), "b": rng.normal(size=ONE_THREAD_ROWS)})
    model = Recording(max_iter=20).fit(frame, frame.a * 2 + frame.b)
    scorer = Scorer(model, ("a", "b"), "sklearn")
    with threadpool_limits(2, user_api="openmp"):
        few = scorer.predict(frame.head(168))
        assert model.threads and set(model.threads) == {1}
        pred, proba = scorer.predict_with_proba(frame.head(2000))
        assert set(model.threads) == {1} and proba is None
        many = scorer.predict(frame)
        assert set(model.threads) == {2}  # large predictions keep every core
        assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"] == model.threads
    np.testing.assert_array_equal(few, many[:168])
    np.testing.assert_array_equal(pred, many[:2000])


def test_a_runtime_loaded_after_the_first_limit_is_limited_too() -> None:
    """LightGBM brings its own OpenMP runtime: one imported after a first prediction is limited as well
    (a suite worker that had loaded it saw [2, 1] above)."""
    with threads_for(10):
        pass
    import lightgbm  # noqa: F401  (its own libgomp)

    with threads_for(10):
        assert {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"} == {1}
