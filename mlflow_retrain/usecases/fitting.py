"""Fits the backtest knows it will need, made ahead in worker processes or on a Dask cluster.

Why it is built this way: docs/design.md#usecases-fitting.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

import pandas as pd
from joblib.externals.loky import ProcessPoolExecutor

from mlflow_retrain.policy.config import Config
from mlflow_retrain.adapters.data import LabelledData
from mlflow_retrain.adapters.train import FitResult, fit

_held: tuple[Config, LabelledData] | None = None  # a local worker's policy and data


def _hold(config: Config, data: LabelledData, threads: int) -> None:
    global _held
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)  # for the worker's life
    _held = (config, data)


def _fit_held(as_of: pd.Timestamp) -> FitResult:
    assert _held is not None, "a fit worker runs only in a pool started by FitsAhead"
    return fit(*_held, as_of)


class FitsAhead:
    """Fits submitted ahead (`submit`) and collected in order of need (`take`)."""

    def __init__(self, config: Config, data: LabelledData, jobs: int, client: Any = None):
        self.pending: dict[pd.Timestamp, Any] = {}
        self._client = client
        self._pool: ProcessPoolExecutor | None = None
        self._limits: Any = None
        if client is not None:
            self._held = client.scatter([config, data], broadcast=True)
        else:
            from threadpoolctl import threadpool_limits

            threads = max(1, (os.cpu_count() or 1) // jobs)
            # this process predicts while the workers fit: OpenMP threads beyond the cores spin against
            # each other (HistGradientBoosting's predictions became several times slower that way)
            self._limits = threadpool_limits(max(1, (os.cpu_count() or 1) // (jobs + 1)))
            # loky (joblib's), not the standard library's: its workers do not re-run the caller's
            # `__main__`, so a user's script without a main guard can call run_backtest
            self._pool = ProcessPoolExecutor(max_workers=jobs, initializer=_hold, initargs=(config, data, threads))

    def submit(self, points: Iterable[pd.Timestamp]) -> None:
        for point in points:
            if point not in self.pending:
                self.pending[point] = self._submit(point)

    def _submit(self, point: pd.Timestamp) -> Future | Any:
        if self._client is not None:
            return self._client.submit(fit, *self._held, point, pure=False)
        return self._pool.submit(_fit_held, point)

    def take(self, point: pd.Timestamp) -> FitResult | None:
        """The fit made ahead for `point` (waiting for it if need be), or None if none was submitted."""
        future = self.pending.pop(point, None)
        return None if future is None else future.result()

    def close(self) -> None:
        for future in self.pending.values():
            future.cancel()
        self.pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._limits is not None:
            self._limits.restore_original_limits()
