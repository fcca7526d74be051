"""Where output goes while work runs: stdout is for a command's result only.

MLflow prints a "View run ... at: URL" line on stdout when the store is a server, and the `train`
entry point run through `mlflow run` is a subprocess that inherits our stdout. Redirecting at the
file-descriptor level catches both, so `--json | jq` works in CI and the demo's story stays readable.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import sys
import threading
from typing import Iterator, TextIO

from mlflow_retrain.redact import RedactingStream, install_log_filter, redact


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


@contextlib.contextmanager
def redacted_output() -> Iterator[None]:
    """While the block runs, what this process writes through `sys.stdout` / `sys.stderr` and its log
    records have credentials masked (see `redact`): MLflow's "View run ... at: <uri>" lines, its
    warnings, our own messages. Child processes' output is masked where we forward it
    (`tail_of_output`)."""
    install_log_filter()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        sys.stdout, sys.stderr = saved


@contextlib.contextmanager
def tail_of_output(keep: int = 15) -> Iterator[collections.deque]:
    """While the block runs, everything written to fds 1 and 2 (by children too) still reaches
    stderr, live and with credentials masked, and its last `keep` lines are kept: a failed subprocess is reported with what it
    said last, not with "see above" in a CI log."""
    sys.stdout.flush()
    sys.stderr.flush()
    lines: collections.deque = collections.deque(maxlen=keep)
    read_end, write_end = os.pipe()
    saved_out, saved_err = os.dup(1), os.dup(2)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as source:
            for line in source:
                text = line.decode(errors="replace")
                clean = redact(text)  # a child's "View run ... at: <uri>" carries the URI's credentials
                os.write(saved_err, line if clean == text else clean.encode())
                lines.append(clean.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield lines
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)  # the pipe's last writer is gone: the reader sees its end
        reader.join(timeout=30)
        os.close(saved_out)
        os.close(saved_err)
