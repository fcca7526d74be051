"""Run a fleet's tasks in a pool of worker processes that import once and serve many models.

Why it is built this way: docs/design.md#fleet-pool.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from mlflow_retrain.fleet.task import Row, Task

# What a worker needs, imported once in the forkserver its workers fork from: the worker module, and
# what a cycle would otherwise import on first use: the sqlite stores, the model flavors and skops,
# which MLflow loads scikit-learn models with (5 s of a first no-op cycle on this 2-core machine).
# A name missing from a future MLflow is skipped.
PRELOAD = ("mlflow_retrain.fleet.work", "mlflow.sklearn", "mlflow.pyfunc", "skops.io",
           "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store")
STOP_SECONDS = 10.0  # a worker told to stop that has not within this is terminated


def _context() -> Any:
    """A forkserver that preloads the worker module (ignored if this process started one already:
    its workers then import on their first task). Forking from a clean server, never from this
    process, keeps open sqlite connections and threads of the caller out of the workers."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    return context


def _serve(conn: Connection, level: int) -> None:
    """A worker's life: set up once, then one task after another until told to stop (None)."""
    from mlflow_retrain.fleet import work

    work.init(level)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        conn.send(work.run(task))


@dataclass
class _Worker:
    process: Any
    conn: Connection
    task: int | None = None  # the index of the task it holds

    @classmethod
    def start(cls, context: Any, level: int) -> _Worker:
        ours, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(theirs, level), name="mlflow-retrain-fleet-worker")
        process.start()
        theirs.close()
        return cls(process, ours)

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(STOP_SECONDS)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self.conn.close()


def run_tasks(tasks: Sequence[Task], jobs: int, on_row: Callable[[int, Row], None] = lambda i, row: None,
              client: Any = None) -> list[Row]:
    """Every task's row, in the tasks' order; `on_row` hears of each as it finishes (progress). With a
    Dask `client` (`cluster.connect`) the tasks run on its workers instead of `jobs` local ones."""
    if not tasks:
        return []
    if client is not None:
        return _on_cluster(tasks, client, on_row)
    context, level = _context(), logging.getLogger().getEffectiveLevel()
    rows: dict[int, Row] = {}
    queue = deque(range(len(tasks)))
    workers = [_Worker.start(context, level) for _ in range(min(jobs, len(tasks)))]

    def finish(worker: _Worker, row: Row) -> None:
        rows[worker.task] = row
        on_row(worker.task, row)
        worker.task = None

    def feed(worker: _Worker) -> None:
        if queue:
            worker.task = queue.popleft()
            worker.conn.send(tasks[worker.task])

    try:
        for worker in workers:
            feed(worker)
        while busy := [w for w in workers if w.task is not None]:
            wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for worker in busy:
                if worker.conn.poll():  # a result, even from a worker that died right after sending it
                    try:
                        finish(worker, worker.conn.recv())
                        feed(worker)
                        continue
                    except EOFError:
                        pass
                if not worker.process.is_alive():
                    member = tasks[worker.task].member
                    finish(worker, Row(member.model_name or member.label, member.label, "crashed",
                                       f"its worker process died (exit code {worker.process.exitcode}: out of "
                                       "memory, or a crash in native code); the other models ran on", 1))
                    worker.conn.close()
                    workers[workers.index(worker)] = fresh = _Worker.start(context, level)
                    feed(fresh)
    finally:
        for worker in workers:
            worker.stop()
    return [rows[i] for i in range(len(tasks))]


def _on_cluster(tasks: Sequence[Task], client: Any, on_row: Callable[[int, Row], None]) -> list[Row]:
    """The tasks as Dask futures (`work.run_remote`). A task whose worker died, or that could not run
    there (mlflow-retrain missing on the worker), is that model's `crashed` row; the others run on."""
    from distributed import as_completed

    level = logging.getLogger().getEffectiveLevel()
    futures = client.map(_remote, list(tasks), level=level, pure=False, retries=0)
    index = {future.key: i for i, future in enumerate(futures)}
    rows: dict[int, Row] = {}
    for future in as_completed(futures, loop=client.loop):
        i = index[future.key]
        try:
            row = future.result()
        except Exception as exc:  # noqa: BLE001 - whatever the cluster says, it is this model's row
            member = tasks[i].member
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            row = Row(member.model_name or member.label, member.label, "crashed",
                      f"its task failed on the cluster ({type(exc).__name__}: {first}); the other models ran on", 1)
        rows[i] = row
        on_row(i, row)
    return [rows[i] for i in range(len(tasks))]


def _remote(task: Task, level: int) -> Row:
    """Imported on the worker when it runs, so a worker without mlflow-retrain fails this task alone."""
    from mlflow_retrain.fleet import work

    return work.run_remote(task, level)
