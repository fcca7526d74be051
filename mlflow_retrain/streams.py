"""Where output goes while work runs: stdout is for a command's result only.

MLflow prints a "View run ... at: URL" line on stdout when the store is a server, and the `train`
entry point run through `mlflow run` is a subprocess that inherits our stdout. Redirecting at the
file-descriptor level catches both, so `--json | jq` works in CI and the demo's story stays readable.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import Iterator, TextIO


@contextlib.contextmanager
def stdout_into(stream: TextIO) -> Iterator[None]:
    """While the block runs, whatever writes to stdout (this process or its children) goes to `stream`.

    The redirect is of file descriptor 1 itself, which children inherit, whatever object
    `sys.stdout` is at the time (a test runner's capture, for instance).
    """
    try:
        target = stream.fileno()
    except (AttributeError, io.UnsupportedOperation, ValueError):
        target = None  # not a real file (click's test runner): the Python-level redirect is enough
    sys.stdout.flush()
    saved = os.dup(1) if target is not None else None
    if target is not None:
        os.dup2(target, 1)
    try:
        with contextlib.redirect_stdout(stream):
            yield
    finally:
        stream.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)
