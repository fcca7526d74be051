"""A version trained outside a cycle's own process: by hand (`mlflow-retrain train`), or by the
built-in MLproject that a cycle runs (`mlflow run -e train`, which passes `--cycle-run-id`).

Fitting, logging and registering are `adapters.train`'s; the version is then placed through the one
module that moves versions (`loop.moves.place`), unless a cycle runs the training: that cycle places
the version itself, in its own process and under its lease.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import pandas as pd

from mlflow_retrain.adapters import train as training
from mlflow_retrain.adapters.data import LabelledData
from mlflow_retrain.adapters.registry import Registry
from mlflow_retrain.loop.moves import place
from mlflow_retrain.policy.config import Config

log = logging.getLogger(__name__)


def train(config: Config, *, as_of: str | pd.Timestamp | None = None, data: LabelledData | None = None,
          trigger: str = "manual", reason: str = "trained by hand", cycle_run_id: str = "",
          bootstrap: bool = True, refit_of: str = "") -> training.TrainResult:
    """Fit, log, register, place (Staging, or Production for a first version that passes the
    absolute gate). With a `cycle_run_id` (the cycle's `mlflow run` child) the version is only
    registered, every write fenced by the cycle's lease: the cycle places it (`trainers.adopt`); with
    `refit_of` too, it is the refit of that validated run (`validate.refit`)."""
    registry = Registry(config)
    result, made = training.train(config, registry, as_of=as_of, data=data, trigger=trigger, reason=reason,
                                  cycle_run_id=cycle_run_id, bootstrap=bootstrap and not refit_of,
                                  follow=bool(cycle_run_id), refit_of=refit_of)
    stage = "None" if cycle_run_id else place(config, registry, made)
    if not cycle_run_id:  # a cycle describes its versions once it has judged them
        registry.describe()
    log.info("registered %s version %s (%s)", config.model_name, result.version, stage)
    return replace(result, stage=stage)
