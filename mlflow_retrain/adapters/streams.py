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
import re
import sys
import threading
from typing import Callable, Iterator, TextIO

from mlflow_retrain.base.redact import RedactingStream, install_log_filter, redact


@contextlib.contextmanager
def stdout_into(stream: TextIO) -> Iterator[Callable[[str], None]]:
    """While the block runs, whatever writes to stdout (this process or its children) goes to `stream`.

    The redirect is of file descriptor 1 itself, which children inherit, whatever object
    `sys.stdout` is at the time (a test runner's capture, for instance). The block gets a writer to
    the stdout it replaced: a result printed before the work is quite over (a cycle's report before
    its notifications are delivered).
    """
    try:
        target = stream.fileno()
    except (AttributeError, io.UnsupportedOperation, ValueError):
        target = None  # not a real file (click's test runner): the Python-level redirect is enough
    sys.stdout.flush()
    original = sys.stdout
    saved = os.dup(1) if target is not None else None
    if target is not None:
        os.dup2(target, 1)

    def write(text: str) -> None:
        if saved is not None:
            os.write(saved, text.encode())
        else:
            original.write(text)
            original.flush()

    try:
        with contextlib.redirect_stdout(stream):
            yield write
    finally:
        stream.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


@contextlib.contextmanager
def output_into(log: TextIO) -> Iterator[None]:
    """Both output streams of this process and its children (the `train` entry point's tables and
    MLflow's progress) into `log`, so a replay's story is not buried; `stdout_into` for stdout."""
    try:
        target = log.fileno()
    except (AttributeError, io.UnsupportedOperation, ValueError):
        target = None  # not a real file (click's test runner): the Python-level redirect is enough
    sys.stderr.flush()
    saved = os.dup(2) if target is not None and target != 2 else None
    if saved is not None:
        os.dup2(target, 2)
    try:
        with stdout_into(log), contextlib.redirect_stderr(log):
            yield
    finally:
        log.flush()
        if saved is not None:
            os.dup2(saved, 2)
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
    said last, not with "see above" in a CI log. A child's traceback that ends in the tracking server
    not answering is condensed to its last line (`ServerTracebacks`): the cause is the server, and
    the cycle says so in its own error line."""
    sys.stdout.flush()
    sys.stderr.flush()
    lines: collections.deque = collections.deque(maxlen=keep)
    read_end, write_end = os.pipe()
    saved_out, saved_err = os.dup(1), os.dup(2)

    def pump() -> None:
        condense = ServerTracebacks()

        def forward(text: str) -> None:
            clean = redact(text)  # a child's "View run ... at: <uri>" carries the URI's credentials
            os.write(saved_err, clean.encode())
            lines.append(clean.rstrip())

        with os.fdopen(read_end, "rb") as source:
            for line in source:
                for text in condense.feed(line.decode(errors="replace")):
                    forward(text)
        for text in condense.close():
            forward(text)

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


class ServerTracebacks:
    """Line by line, holds back a Python traceback (chained ones included) until its last line; a
    traceback whose exception says the tracking server did not answer comes out as that one line,
    any other exactly as it was (a bug in a training script keeps its whole traceback). A child
    `mlflow-retrain` saying the server stopped answering is reported as the training run's, not as
    a second `error:` line."""

    START = "Traceback (most recent call last):"
    LINKS = ("During handling of the above exception", "The above exception was the direct cause")
    SERVER = re.compile(r"API request to \S+ failed with|stopped answering|Connection refused|ConnectionError|"
                        r"ConnectTimeout|ReadTimeout|Read timed out|Max retries exceeded|RemoteDisconnected")

    def __init__(self) -> None:
        self.held: list[str] = []
        self.last: str | None = None  # a candidate last line: the block ends unless a chain link follows

    def feed(self, line: str) -> list[str]:
        bare = line.strip()
        if not self.held:
            if bare.startswith("error: tracking server") and "stopped answering" in bare:
                # the child's own one line (our CLI's); the cycle's error line is the one that ends it
                return ["the training run's " + line.lstrip()[len("error: "):]]
            if bare == self.START:
                self.held = [line]
                return []
            return [line]
        if self.last is not None:
            if not bare or bare.startswith(self.LINKS):  # the chain goes on
                self.held.append(line)
                if bare:
                    self.last = None
                return []
            if bare == self.START and self.held[-1].strip() == "":
                self.held.append(line)
                self.last = None
                return []
            return self._end() + self.feed(line)
        self.held.append(line)
        if bare and not line[:1].isspace() and bare != self.START and not bare.startswith(self.LINKS):
            self.last = line  # "SomeError: message": the end, unless the chain continues
        return []

    def close(self) -> list[str]:
        return self._end() if self.held else []

    def _end(self) -> list[str]:
        held, last = self.held, self.last
        self.held, self.last = [], None
        if last is not None and self.SERVER.search(last):
            return [last.rstrip("\n") + "  (traceback condensed: the tracking server did not answer)\n"]
        return held
