"""One model's share of a fleet command, as run inside a worker process.

Workers are long-lived: each imports MLflow, scikit-learn and the controller once (this module's
imports, preloaded by the pool) and then serves many models. A task carries everything a worker needs
as plain data (the policy as read, the parent's environment, the options) and comes back as one `Row`;
whatever goes wrong with that model (a bad policy, missing data, a held lease, a bug) is that row's
outcome and never reaches the others.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from mlflow_retrain.adapters import store
from mlflow_retrain.base import links
from mlflow_retrain.base import tags as T
from mlflow_retrain.usecases.audit import history
from mlflow_retrain.policy.config import Config
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.base.errors import RetrainError
from mlflow_retrain.fleet.rules import OUTCOME_OF_CODE, age, format_age, selected
from mlflow_retrain.fleet.task import NOT_SELECTED, Row, Task
from mlflow_retrain.usecases.monitor import run_monitor
from mlflow_retrain.adapters.notify import notify
from mlflow_retrain.usecases.monitor_events import downtime_events
from mlflow_retrain.base.redact import redact, scrub
from mlflow_retrain.adapters.registry import Registry
from mlflow_retrain.adapters.tracking import check_tracking, configure_client, server_error

log = logging.getLogger(__name__)


def init(level: int) -> None:
    """A worker's start: its stdout (file descriptor 1, which training subprocesses inherit) goes to
    stderr, so the fleet's `--json` on the parent's stdout stays parseable; logging as the parent's."""
    os.dup2(2, 1)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "evidently", "git"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


_one_at_a_time = threading.Lock()
_initialised = False


def run_remote(task: Task, level: int) -> Row:
    """A task on a Dask worker (`fleet --cluster`): set up as a pool worker on the first, and one task
    at a time per worker process, whatever its thread count: a cycle sets the process's environment
    and MLflow's global store. The worker's own environment is put back after each."""
    global _initialised
    with _one_at_a_time:
        if not _initialised:
            init(level)
            _initialised = True
        own = dict(os.environ)
        try:
            return run(task)
        finally:
            os.environ.clear()
            os.environ.update(own)


def run(task: Task) -> Row:
    """One model's command; every failure becomes the row's outcome and exit code."""
    started = time.perf_counter()
    os.environ.clear()
    os.environ.update(task.environ)
    name = task.member.model_name or task.member.label
    try:
        with store.scoped():
            config = task.member.config()
            chosen = store.resolve(config)
            store.use(chosen)
            configure_client()
            _open_local_store(chosen.tracking_uri, creates=task.command == "cycle")
            row = _selected(config, task) or COMMANDS[task.command](config, task)
            row.store = chosen.describe()
            row.ui = model_page(chosen.tracking_uri, row.model)
    except Exception as exc:  # noqa: BLE001 - one model's failure, whatever it is, is its row
        row = _failed(name, task, exc)
    row.seconds = round(time.perf_counter() - started, 2)
    return row


_opened: set[str] = set()


def _open_local_store(uri: str, creates: bool) -> None:
    """Open a local sqlite store once per worker, under a file lock. Two workers opening a store
    that does not exist yet would both run MLflow's schema migrations on the new file and fail
    (`table _alembic_tmp_params already exists`); under the lock the first creates it and the others
    find it made. A command that only reads leaves a store that does not exist uncreated."""
    import fcntl
    import hashlib
    import tempfile
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    path = store.sqlite_file(uri)
    if path is None or uri in _opened or (not creates and not path.exists()):
        return
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"mlflow-retrain-store-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    _opened.add(uri)


def model_page(tracking_uri: str, name: str) -> str | None:
    """The registered model's page in the MLflow UI of a tracking server (credentials masked)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return redact(links.absolute(tracking_uri, links.model(name)))


def _selected(config: Config, task: Task) -> Row | None:
    """A row saying the model is left out, or None when `--select` keeps it. Reading the tags does not
    create a store that does not exist yet (nothing registered there carries a tag)."""
    if not task.select:
        return None
    check_tracking(write=False)
    if selected(Registry(config).model_tags(), task.select):
        return None
    wanted = ", ".join(f"{k}={v}" for k, v in task.select.items())
    return Row(config.model_name, task.member.label, NOT_SELECTED, f"the registered model is not tagged {wanted}")


def _failed(name: str, task: Task, exc: Exception) -> Row:
    """A user error is its one line and exit code, as `mlflow-retrain` alone prints it; a server that
    stopped answering likewise; anything else is a bug, logged with its traceback, exit 1."""
    error = server_error(exc) or (exc if isinstance(exc, RetrainError) else None)
    if error is None:
        scrub(exc)
        log.error("%s (%s): unexpected failure", name, task.member.label, exc_info=exc)
        first = (str(exc).strip().splitlines() or [""])[0]
        return Row(name, task.member.label, OUTCOME_OF_CODE[1], f"{type(exc).__name__}: {first}", 1)
    return Row(name, task.member.label, OUTCOME_OF_CODE.get(error.exit_code, "error"), redact(str(error)),
               error.exit_code)


def _row(config: Config, task: Task, *, outcome: str, reason: str, at: str | None, last_metric: float | None,
         **extra: Any) -> Row:
    """The row, with Production as it is *after* the command (a promotion just made shows) and its age
    at the command's data time."""
    production = Registry(config).production()
    span = age(production.tags.get(T.PROMOTED_AT) if production else None, at)
    return Row(config.model_name, task.member.label, outcome, reason, production=production and production.version,
               age=format_age(span), age_days=None if span is None else round(span.total_seconds() / 86400, 2),
               metric=config.metric, last_metric=last_metric, threshold=config.threshold_limit, **extra)


def _newest(values: list[float | None]) -> float | None:
    """The newest window's metric that exists (a window without rows has none)."""
    return next((v for v in reversed(values) if v is not None), None)


def _cycle(config: Config, task: Task, dry_run: bool = False) -> Row:
    report = run_cycle(config, as_of=task.as_of, via=task.via, dry_run=dry_run)
    return _row(config, task, outcome=report.outcome, reason=report.reason, at=report.as_of,
                last_metric=_newest([w.metric for w in report.monitoring]), run_id=report.cycle_run_id)


def _check(config: Config, task: Task) -> Row:
    return _cycle(config, task, dry_run=True)


def _status(config: Config, task: Task) -> Row:
    """The last cycle's (or manual move's) outcome and reason, from its audit run: nothing is
    recomputed, so `fleet status` is quick and reads what the MLflow UI shows."""
    from mlflow.tracking import MlflowClient

    check_tracking(write=False)
    Registry(config).require()
    last = next(iter(history(config, limit=1)), None)
    if last is None:
        return _row(config, task, outcome="no_cycle", reason="no cycle has run yet", at=None, last_metric=None)
    metrics = MlflowClient().get_run(last["run_id"]).data.metrics
    return _row(config, task, outcome=last["outcome"], reason=last["reason"], at=last["as_of"] or None,
                last_metric=metrics.get(f"monitor_{config.metric}"), run_id=last["run_id"])


def _monitor(config: Config, task: Task) -> Row:
    """The model's own monitor (its dashboard in its own folder); downtime is its row's exit 4 and is
    told to its `notify:` targets, as `mlflow-retrain monitor` does."""
    check_tracking()
    result = run_monitor(config, out_dir=task.out_dir)
    notify(config, downtime_events(config.model_name, result), run_id=result.run_id)
    health = result.health
    reason = "healthy" if not health else health[0] + (f" (and {len(health) - 1} more)" if len(health) > 1 else "")
    return _row(config, task, outcome="healthy" if not health else "downtime", reason=reason,
                at=result.points[-1].end.isoformat() if result.points else None,
                last_metric=_newest([p.metric for p in result.points]), dashboard=str(result.dashboard),
                run_id=result.run_id, exit_code=0 if not health else 4)


COMMANDS: dict[str, Callable[[Config, Task], Row]] = {"cycle": _cycle, "check": _check, "status": _status,
                                                      "monitor": _monitor}
