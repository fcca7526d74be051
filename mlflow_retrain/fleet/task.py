"""A fleet's unit of work, its result and the whole command's, as plain data: pickled to a worker and
back, and light to import (the parent process never imports MLflow; its workers do, once each)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlflow_retrain.fleet.policies import Member

NOT_SELECTED = "not_selected"


@dataclass(frozen=True)
class Task:
    """What one worker does for one model."""

    command: str  # cycle | check | status | monitor
    member: Member
    # the fleet command's environment: a worker forked from a long-lived server must see the store
    # and credentials of *this* command, not those of whenever the server started
    environ: Mapping[str, str]
    select: Mapping[str, str]
    as_of: str | None = None
    via: str = "project"
    out_dir: Path | None = None  # monitor: this model's own dashboard folder


@dataclass
class Row:
    """One model in the fleet's summary: its Production, how old it is, its newest error, and what the
    command decided and why. `outcome` is the command's own word (a cycle's outcome, the last cycle's for
    `status`, healthy/downtime for `monitor`) or, when it failed, the kind of failure."""

    model: str
    policy: str
    outcome: str
    reason: str
    exit_code: int = 0
    production: str | None = None
    age: str | None = None
    age_days: float | None = None
    metric: str | None = None
    last_metric: float | None = None
    threshold: float | None = None  # the metric_threshold trigger's limit, for the dashboard's chart
    dashboard: str | None = None
    ui: str | None = None  # the registered model's page in the MLflow UI, when the store is a server
    run_id: str | None = None
    store: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FleetResult:
    """What one fleet command found: a row per model, the fleet's exit code, and (monitor) its dashboard."""

    command: str
    rows: list[Row]  # the models in the selection, in policy order
    not_selected: list[str]  # models `--select` left out (their registered model lacks the tag)
    exit_code: int
    seconds: float
    jobs: int
    dashboard: Path | None = None  # monitor: the fleet's page, linking each model's own

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows:
            out[row.outcome] = out.get(row.outcome, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "exit_code": self.exit_code, "seconds": round(self.seconds, 2),
                "jobs": self.jobs, "counts": self.counts(), "models": [r.to_dict() for r in self.rows],
                "not_selected": self.not_selected, "dashboard": None if self.dashboard is None else str(self.dashboard)}
