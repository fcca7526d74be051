"""Named fault points: where the tests kill a cycle to prove the registry converges afterwards.

Every registry write that matters calls `point("<name>")` just before it happens. In production
this is one dictionary lookup. Two environment variables turn it into a fault injector:

- `MLFLOW_RETRAIN_FAULT_LOG=<file>` appends the name of every point reached, one per line, so a
  test can first list the points a scenario passes through;
- `MLFLOW_RETRAIN_FAULT=<name>[@<n>]` kills the process with SIGKILL the n-th time (default 1st)
  `<name>` is reached: no `finally`, no `atexit`, exactly what a lost machine looks like.
"""

from __future__ import annotations

import os
import signal

FAULT, FAULT_LOG = "MLFLOW_RETRAIN_FAULT", "MLFLOW_RETRAIN_FAULT_LOG"

_hits: dict[str, int] = {}


def point(name: str) -> None:
    """A place a crash must be survivable; see the module docstring."""
    log, fault = os.environ.get(FAULT_LOG), os.environ.get(FAULT)
    if not (log or fault):
        return
    _hits[name] = _hits.get(name, 0) + 1
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{name}@{_hits[name]}\n")
    if fault:
        target, _, nth = fault.partition("@")
        if target == name and _hits[name] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
