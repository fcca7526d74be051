"""A fleet: one command over many policies (`mlflow-retrain fleet cycle|check|status|monitor`).

Teams run one model per store, region or product: dozens to hundreds of policies against one MLflow
server. Run as separate processes, each model pays the imports of MLflow, scikit-learn and Evidently
again, which costs more than a cycle that decides nothing. Here the policies are read and checked
once (`policies.py`, `rules.py`), then run in a pool of worker processes that import once and serve
many models (`pool.py`); each model's cycle takes its own lease, exactly as `mlflow-retrain cycle`
does, and one model's failure is its own row. This process never imports MLflow.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlflow_retrain.fleet.policies import read_members
from mlflow_retrain.fleet.pool import run_tasks
from mlflow_retrain.fleet.rules import (
    fleet_exit_code,
    folder_names,
    parse_selectors,
    refuse_clashes,
)
from mlflow_retrain.fleet.task import NOT_SELECTED, FleetResult, Row, Task

COMMANDS = ("cycle", "check", "status", "monitor")


def run_fleet(command: str, policies: Sequence[Path], *, jobs: int, select: Sequence[str] = (),
              as_of: str | None = None, via: str = "project", out_dir: Path | None = None,
              progress: bool = True, cluster: str | None = None) -> FleetResult:
    """Read every policy, refuse what concerns the whole fleet (no policies, a model named twice, a bad
    `--select`, a `--cluster` that does not answer) before anything runs, then run `command` for each
    model in `jobs` worker processes, or on the Dask cluster's workers."""
    started = time.perf_counter()
    if cluster is not None:
        from mlflow_retrain.adapters.cluster import check_address

        check_address(cluster)
    wanted = parse_selectors(select)
    members = read_members(policies)
    refuse_clashes((m.label, m.model_name) for m in members if m.model_name is not None)
    folders = folder_names([m.model_name or m.label for m in members])
    environ = dict(os.environ)
    tasks = [Task(command, m, environ, wanted, as_of=as_of, via=via,
                  out_dir=None if out_dir is None else (out_dir / folders[m.model_name or m.label]).resolve())
             for m in members]

    finished: list[int] = []

    def report(i: int, row: Row) -> None:
        finished.append(i)
        if progress:
            print(f"[{len(finished)}/{len(tasks)}] {row.model}: {row.outcome} ({row.seconds:.1f} s)",
                  file=sys.stderr, flush=True)

    if cluster is None:
        rows = run_tasks(tasks, jobs, report)
    else:
        from mlflow_retrain.adapters.cluster import connect, workers

        with connect(cluster) as client:
            jobs = workers(client)
            rows = run_tasks(tasks, jobs, report, client=client)
    kept = [r for r in rows if r.outcome != NOT_SELECTED]
    result = FleetResult(command, kept, [r.model for r in rows if r.outcome == NOT_SELECTED],
                         fleet_exit_code(r.exit_code for r in kept), time.perf_counter() - started, jobs)
    if command == "monitor" and out_dir is not None:
        from mlflow_retrain.fleet.dashboard import write_dashboard

        result.dashboard = write_dashboard(result, out_dir)
    return result


def _short(text: str, width: int = 110) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def summary_rows(rows: Sequence[Row], width: int = 110) -> list[dict[str, Any]]:
    """The table's rows: model, Production version, its age, last metric, decision, reason."""
    return [{"model": r.model, "production": f"v{r.production}" if r.production else None, "age": r.age,
             "last_metric": None if r.last_metric is None else f"{r.metric} {r.last_metric:.4g}",
             "decision": r.outcome, "reason": _short(" ".join(r.reason.split()), width)} for r in rows]


def footer(result: FleetResult) -> str:
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(result.counts().items()))
    left_out = f"; {len(result.not_selected)} not selected by --select" if result.not_selected else ""
    return (f"{len(result.rows)} model(s) in {result.seconds:.1f} s with {result.jobs} worker(s): {counts or 'none'}"
            f"{left_out}; exit {result.exit_code}")


def to_markdown(result: FleetResult) -> str:
    """The CI job summary: one table row per model, worst first."""
    from mlflow_retrain.fleet.rules import SEVERITY

    def rank(row: Row) -> int:
        return -(SEVERITY.index(row.exit_code) if row.exit_code in SEVERITY else len(SEVERITY))

    lines = [f"## mlflow-retrain fleet {result.command}: exit {result.exit_code}", "", footer(result), "",
             "| model | Production | age | last metric | decision | reason |", "| --- | --- | --- | --- | --- | --- |"]
    for row in summary_rows(sorted(result.rows, key=rank), width=300):
        lines.append("| " + " | ".join(str(v if v is not None else "-").replace("|", "\\|") for v in row.values()) + " |")
    return "\n".join(lines) + "\n"
