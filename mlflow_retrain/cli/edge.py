"""Process-wide state ends with the command that set it: the process edge.

A command sets state for its whole process and the children it starts: the environment (PATH for
`mlflow run`, the store's URI, MLflow's HTTP limits, the experiment), `sys.path` (a policy's own
estimator module), MLflow's store and active experiment, the logging configuration, the tracking
client's outage bookkeeping. Each of its own processes would start afresh; a command run in a process
that goes on (tests through Click's CliRunner, a notebook calling `main`) must give the same result,
so all of it is put back when the command returns. The redirected streams are put back by their own
context managers (`adapters/streams.py`).
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Iterator

from mlflow_retrain.adapters import store
from mlflow_retrain.adapters.tracking import forget_outage

NOISY = ("mlflow", "alembic", "urllib3", "evidently", "git")  # held at WARNING unless -vv asks for more
# the loggers a command configures: the root (`basicConfig`, the redacting filter), the noisy ones, `serve`'s
CONFIGURED = ("", *NOISY, "mlflow_retrain.serve")


@contextmanager
def process_edge() -> Iterator[None]:
    """While the block runs, a command may set what it needs process-wide; then the process is as it was."""
    environ, path = dict(os.environ), list(sys.path)
    forget_outage()  # not on the way out: the error line of a command the server left says what went unanswered
    with _logging_kept(), store.scoped():
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(environ)
            sys.path[:] = path


@contextmanager
def _logging_kept() -> Iterator[None]:
    """The root logger's handlers, and the levels and filters of the loggers a command configures and of
    their handlers. A logger's own handlers stay: MLflow gives its logger one when it is first imported,
    and a process imports it once."""
    loggers = [logging.getLogger(name) for name in CONFIGURED]
    levels = [(logger, logger.level, list(logger.filters)) for logger in loggers]
    root = logging.getLogger()
    handlers = list(root.handlers)
    filters = {handler: list(handler.filters) for logger in loggers for handler in logger.handlers}
    factory = logging.getLogRecordFactory()
    try:
        yield
    finally:
        for added in [h for h in root.handlers if h not in handlers]:
            added.close()
        root.handlers[:] = handlers
        for logger, level, kept in levels:
            logger.setLevel(level)
            logger.filters[:] = kept
        for handler, kept in filters.items():
            handler.filters[:] = kept
        logging.setLogRecordFactory(factory)
