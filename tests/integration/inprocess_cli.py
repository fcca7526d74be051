"""`mlflow-retrain` run in the test process, as a process of its own would run it: `forked_cli.run`'s
interface without a process.

A command leaves the process as it found it (`mlflow_retrain/cli/edge.py`), so commands run one after
another in the test process give what separate processes give. `run` gives the command what a new
process has: the working folder and environment asked for, stdin at /dev/null, file descriptors 1
and 2 on files of their own (a child's output lands there too), `sys.stdout` / `sys.stderr` over
them, and no logging configured (the command's `basicConfig` then writes to that stderr); all of it
is put back after. It runs `main`, so a usage error is worded as the console script words it.
Tests about a process itself (a kill, an exit of the interpreter, the console script, capabilities
dropped before an exec) keep `forked_cli` or a real subprocess.
"""

from __future__ import annotations

import atexit
import faulthandler
import gc
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from forked_cli import Done

from mlflow_retrain.cli import main


def run(args: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 300) -> Done:
    """One command, in this process. A command still running after `timeout` seconds ends the test
    process with every thread's traceback (there is no child to kill)."""
    with tempfile.TemporaryDirectory(prefix="inprocess-cli-") as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        with _as_a_process(cwd or Path.cwd(), os.environ.copy() if env is None else env, out, err):
            faulthandler.dump_traceback_later(timeout, exit=True)
            try:
                main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:  # noqa: BLE001 - a bug: its traceback on the command's stderr, as a process shows it
                traceback.print_exc()
                code = 1
            finally:
                faulthandler.cancel_dump_traceback_later()
                atexit.unregister(gc.freeze)  # `main` registers it for its own process's exit, not pytest's
        return Done(list(args), code, out.read_text(), err.read_text())


@contextmanager
def _as_a_process(cwd: Path, env: dict[str, str], out: Path, err: Path) -> Iterator[None]:
    """The working folder, environment, standard streams and logging of a new process, for the block."""
    root = logging.getLogger()
    saved = Path.cwd(), dict(os.environ), (sys.stdin, sys.stdout, sys.stderr), list(root.handlers), root.level
    for stream in saved[2][1:]:
        stream.flush()
    fds = [os.dup(fd) for fd in (0, 1, 2)]
    targets = [os.open(os.devnull, os.O_RDONLY), os.open(out, os.O_WRONLY | os.O_CREAT, 0o600),
               os.open(err, os.O_WRONLY | os.O_CREAT, 0o600)]
    for fd, target in enumerate(targets):
        os.dup2(target, fd)
        os.close(target)
    sys.stdin, sys.stdout, sys.stderr = (open(fd, mode, encoding="utf-8", closefd=False)
                                         for fd, mode in ((0, "r"), (1, "w"), (2, "w")))
    root.handlers = []
    root.setLevel(logging.WARNING)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.environ.clear()
        os.environ.update(saved[1])
        os.chdir(saved[0])
        root.handlers = saved[3]
        root.setLevel(saved[4])
        sys.stdin, sys.stdout, sys.stderr = saved[2]
        for fd, kept in enumerate(fds):
            os.dup2(kept, fd)
            os.close(kept)
