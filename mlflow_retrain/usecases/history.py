"""`replay`: a history replayed into the configured store, one real cycle per step, in order.

`backtest` replays in memory and writes nothing; this writes what cycles run on a schedule would
have written (versions, audit runs, reports), so a store starts from the history instead of a first
model trained on all of it, whose cycles could then never look back. `make demo` replays this way.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Callable, TextIO

import pandas as pd

from mlflow_retrain.adapters.data import LabelledData
from mlflow_retrain.adapters.registry import Registry
from mlflow_retrain.adapters.streams import output_into
from mlflow_retrain.base.errors import DataError, UsageError
from mlflow_retrain.decide import format_span
from mlflow_retrain.decide.words import moment, unit_for
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.loop.observe import last_retrain
from mlflow_retrain.loop.report import CycleReport
from mlflow_retrain.policy.config import Config
from mlflow_retrain.usecases.replay import replay_steps


def first_step(config: Config, data: LabelledData) -> pd.Timestamp:
    """The first time a model can be trained: a training window and a holdout after the data's first
    row. A window longer than half the data (`init`'s "all history") is a cap, not a wait: the first
    model then trains on the first half, so the replay still has a history to walk."""
    half = (data.last_labelled - data.first) / 2
    return data.first + min(config.training.window, half) + config.training.holdout


def history_steps(config: Config, data: LabelledData, start: str | None, end: str | None,
                  every: timedelta) -> list[pd.Timestamp]:
    """The replay's `--as-of`s, checked before anything is written: bad input, or a start behind the
    store's history (its cycles would be blocked: a cycle cannot go back in time), is refused."""
    unit = unit_for(config.monitoring.window)
    if start is None and first_step(config, data) >= data.last_labelled:
        raise DataError(f"{data.origin} spans {moment(data.first, unit)}..{moment(data.last_labelled, unit)}: too short "
                        f"for a first model's training rows (a training window of {format_span(config.training.window)}"
                        f", at most half the data) and a holdout ({format_span(config.training.holdout)}) after them: "
                        f"shorten training.holdout, or pass --from")
    steps = replay_steps(data, start if start is not None else first_step(config, data), end, every)
    registry = Registry(config)
    behind = last_retrain(registry.versions()) if registry.unborn is None else None
    if behind is not None and steps[0] < behind:
        last = moment(behind, unit)
        raise UsageError(f"the store's history of {config.model_name!r} reaches {last}, after --from "
                         f"{moment(steps[0], unit)}: replay in order from {last} on "
                         f"(--from {last}), or into a fresh store (another tracking_uri or folder)")
    return steps


def replay_cycles(config: Config, data: LabelledData, steps: list[pd.Timestamp], *, via: str, log: TextIO,
                  each: Callable[[int, CycleReport], None], first_via: str | None = None) -> list[CycleReport]:
    """One cycle per step, oldest first, each told to `each(index, report)` as it ends; the training
    output (a table per version, MLflow's progress) goes to `log`, where it does not bury the story.
    With `first_via`, the cycles up to the first that trains one train `first_via`, the rest `via`
    (the demo shows the `mlflow run` path once and fits the rest in process, the same fit)."""
    reports: list[CycleReport] = []
    for index, as_of in enumerate(steps):
        trained = any(r.candidate_version for r in reports)
        with output_into(log):
            report = run_cycle(config, as_of=as_of.isoformat(), via=first_via if first_via and not trained else via,
                               data=data)
        each(index, report)
        reports.append(report)
    return reports


def step_line(step: str, label: str, report: CycleReport) -> str:
    """One replayed cycle on one line: its data time, Production, the metric, what fired, the outcome."""
    monitored = next((w.metric for w in reversed(report.monitoring) if w.metric is not None), None)
    metric = f"{report.metric} {monitored:6.1f}" if monitored is not None else " " * (len(report.metric) + 7)
    fired = ",".join(report.decision.fired) if report.decision and report.decision.fired else "-"
    version = f"-> v{report.candidate_version}" if report.candidate_version else ""
    return (f"[{step:>5}] {label} as of {report.as_of[:10]}  Production v{report.production_version or '-':<3}"
            f" {metric}  triggers: {fired:<28} {report.outcome:<11} {version}")
