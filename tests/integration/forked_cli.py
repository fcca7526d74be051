"""`mlflow-retrain` in a real child process that skips the imports: forked from a preloaded parent.

Most command line tests run the command in the test process (`inprocess_cli.py`, the same interface):
a command leaves its process as it found it. This is for a command that needs a process of its own:
one run with root's permission override dropped (which holds from an exec on), and `test_lease.py`'s.
A new interpreter pays 3 to 8 s (two cores, the suite's load) to import MLflow, scikit-learn and
pandas before the command does anything. `ForkedCli` starts one helper process per test process
that imports the command line and what it uses, then forks a child per command: its own pid,
working folder, environment, stdout and stderr files and exit code, as `subprocess.run` gives, with
nothing of the test process in it. What it does not cover is the interpreter's own start (`python -m
mlflow_retrain.cli`, the console script): `test_wheel_install.py` and the tests that still spawn
`sys.executable` run those. A child exits as the command line does (atexit handlers, then exit)
without the interpreter's teardown.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# the helper: import, then for each request line fork a child that runs the command, answer
# {"pid"} at once and {"code"} when it ended
HELPER = r"""
import atexit, json, os, sys
import mlflow, sklearn, pandas, mlflow.sklearn, mlflow.store.tracking.sqlalchemy_store
import mlflow_retrain.cli, mlflow_retrain.loop.cycle, mlflow_retrain.loop.evaluate
from mlflow_retrain.cli import main
from mlflow_retrain.adapters.train import model_requirements
model_requirements(object())  # the installed distributions, read once for every child that trains

def child(request):
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
    code = 0
    try:
        main(request["args"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)

for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(request)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
"""


@dataclass(frozen=True)
class Done:
    """What `subprocess.run(..., capture_output=True, text=True)` returns, the parts tests read."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def drop_permission_override() -> None:
    """Root ignores file modes: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, for
    what the process executes next (a `preexec_fn`), so read-only files and folders hold for it."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


class ForkedCli:
    """One helper process; `run` forks a command from it and waits (one command at a time).
    `preexec` runs in the helper before it starts (e.g. `drop_permission_override`)."""

    def __init__(self, preexec: Callable[[], None] | None = None) -> None:
        self.helper = subprocess.Popen([sys.executable, "-c", HELPER], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, env=os.environ.copy(), preexec_fn=preexec)
        self.pending = b""

    def run(self, args: Sequence[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> Done:
        with tempfile.TemporaryDirectory(prefix="forked-cli-") as tmp:
            out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
            request = {"args": list(args), "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
            self.helper.stdin.write((json.dumps(request) + "\n").encode())
            self.helper.stdin.flush()
            pid = json.loads(self._line(timeout))["pid"]
            try:
                code = json.loads(self._line(timeout))["code"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._line(10)
                raise
            return Done(list(args), code, out.read_text(), err.read_text())

    def _line(self, timeout: float) -> str:
        """The helper's next answer line (read from the pipe itself: a buffered reader would hold a
        second line where select cannot see it)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            ready, _, _ = select.select([self.helper.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"no answer from the forked command line within {timeout} s")
            chunk = os.read(self.helper.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"the forked command line's helper exited ({self.helper.poll()})")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode()

    def close(self) -> None:
        self.helper.stdin.close()
        self.helper.wait(30)


_shared: ForkedCli | None = None


def run(args: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 300) -> Done:
    """One command through this test process's helper (started on first use, ended at exit)."""
    global _shared
    if _shared is None or _shared.helper.poll() is not None:
        _shared = ForkedCli()
        atexit.register(_shared.close)
    return _shared.run(args, cwd=cwd or Path.cwd(), env=os.environ.copy() if env is None else env, timeout=timeout)
