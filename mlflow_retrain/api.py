"""The same cycle from Python, for notebooks: a policy (file or dict) and, optionally, a DataFrame.

    import mlflow_retrain
    report = mlflow_retrain.cycle("retrain.yaml", data=frame, as_of="2024-06-30")
    report.outcome, report.reason

Nothing here decides anything: each function builds the inputs the CLI builds (a validated
policy, checked data) and calls the same controller. User errors raise the same `RetrainError`
types the CLI turns into one line.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from mlflow_retrain.policy.config import Config
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.policy.parse import parse_config
from mlflow_retrain.loop.report import CycleReport
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.adapters.data import LabelledData
from mlflow_retrain.adapters.tracking import check_tracking
from mlflow_retrain.adapters.trainers import IN_PROCESS, PROJECT

IN_MEMORY = "<DataFrame>"


def policy(source: str | Path | Mapping[str, Any] | Config) -> Config:
    """A validated policy from a file path, a dict shaped like `retrain.yaml`, or a Config as is.

    A dict may leave out `data.path` when the data comes as a DataFrame."""
    if isinstance(source, Config):
        return source
    if isinstance(source, Mapping):
        raw = {**source, "data": {"path": IN_MEMORY, **(source.get("data") or {})}}
        return parse_config(raw, origin="policy dict")
    return load_config(source)


def _inputs(source: Any, data: pd.DataFrame | None) -> tuple[Config, LabelledData]:
    config = policy(source)
    if data is None:
        return config, LabelledData.load(config)
    return config, LabelledData.from_frame(data, config)


def _trainer_for(config: Config, data: pd.DataFrame | None, folder: Path) -> tuple[Config, str]:
    """In-memory rows train in this process; a user's project reads files, so it gets them written."""
    if data is None:
        return config, PROJECT if config.source is not None else IN_PROCESS
    if config.training.project is None:
        return config, IN_PROCESS
    path = folder / "data.parquet"
    data.to_parquet(path, index=False)
    return dataclasses.replace(config, data=dataclasses.replace(config.data, path=str(path))), PROJECT


def cycle(source: str | Path | Mapping[str, Any] | Config, data: pd.DataFrame | None = None, *,
          as_of: str | pd.Timestamp | None = None, force: bool = False, reason: str | None = None,
          dry_run: bool = False) -> CycleReport:
    """One controller cycle, as `mlflow-retrain cycle`; returns its report (`.outcome`, `.reason`)."""
    config, labelled = _inputs(source, data)
    check_tracking()
    with tempfile.TemporaryDirectory(prefix="mlflow-retrain-api-") as tmp:
        config, via = _trainer_for(config, data, Path(tmp))
        return run_cycle(config, as_of=None if as_of is None else str(as_of), force=force, reason=reason,
                         dry_run=dry_run, via=via, data=labelled)


def check(source: str | Path | Mapping[str, Any] | Config, data: pd.DataFrame | None = None, *,
          as_of: str | pd.Timestamp | None = None) -> CycleReport:
    """What a cycle would decide now and why; writes nothing (as `mlflow-retrain check`)."""
    return cycle(source, data, as_of=as_of, dry_run=True)
