"""A tracking server that dies or freezes mid-cycle: the cycle ends in bounded time with one line.

Each test runs its own `mlflow server` on 127.0.0.1 (in its own process group, so a signal reaches
its workers too) behind a URI that carries a password (a server without auth ignores it), starts
`mlflow-retrain cycle --force` with an estimator that signals when it starts fitting and then takes
a few seconds, and kills (SIGKILL) or freezes (SIGSTOP) the server at that moment. The cycle must
exit 2 with one `error: tracking server ... stopped answering` line, no traceback, no password, in
bounded time; once the server is back, the next cycle converges at once (exit 0: the stopped cycle's
lease is taken over at once, its holder being a process of this host that is gone). Only the CLI is used.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import inprocess_cli
import pytest

from mlflow_retrain.adapters import tracking
from mlflow_retrain.base.errors import TrackingServerError
from mlflow_retrain.adapters.tracking import configure_client, server_error

SECRET = "s3cret"
# small limits so the test is quick: each call 2 s, one retry; everything within 8 s of the first miss
LIMITS = {"MLFLOW_RETRAIN_CALL_TIMEOUT": "2", "MLFLOW_RETRAIN_CALL_RETRIES": "1", "MLFLOW_RETRAIN_DEADLINE": "8"}
BOUND = 40  # seconds from the fault to the cycle's exit, generous for 2 shared cores

SLOW_ESTIMATOR = '''
import os, time
from sklearn.ensemble import HistGradientBoostingRegressor


class SlowFit(HistGradientBoostingRegressor):
    """Signals (a marker file) that fitting started, then takes a few seconds: the moment to strike."""

    def fit(self, X, y, **kwargs):
        marker = os.environ.get("SLOWFIT_MARKER")
        if marker:
            open(marker, "w").close()
            time.sleep(float(os.environ.get("SLOWFIT_SECONDS", "3")))
        return super().fit(X, y, **kwargs)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TrackingServer:
    """A real `mlflow server` over a sqlite store in `folder`, restartable on the same port and store."""

    def __init__(self, folder: Path, template: Path):
        self.folder, self.port = folder, _free_port()
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(template, folder / "mlflow.db")
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://user:{SECRET}@127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.folder / "server.log").open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--artifacts-destination", str(self.folder / "artifacts"), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        give_up = time.monotonic() + 120
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > give_up:
                self.stop()
                raise RuntimeError(f"mlflow server did not start: {(self.folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                return True
        except OSError:
            return False

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)  # the whole group: the server and its workers

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    self.signal(sig)
                except ProcessLookupError:
                    pass
            self.proc.wait(30)
        self.proc = None


@pytest.fixture
def tracking_server(tmp_path: Path, store_template: Path):
    server = TrackingServer(tmp_path / "server", store_template)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def faulty_policy(tmp_path: Path, write_policy) -> Path:
    (tmp_path / "slowfit.py").write_text(SLOW_ESTIMATOR)  # beside the policy: importable from it
    return write_policy(training={"estimator": "slowfit.SlowFit"})


def _env(server: TrackingServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SLOWFIT_"))}
    return {**env, "MLFLOW_TRACKING_URI": server.uri, **LIMITS, **extra}


def _cli(server: TrackingServer, cwd: Path, *args: str) -> inprocess_cli.Done:
    """A command that is not struck (the bootstrap, the cycle after): in this process, as its own would run."""
    done = inprocess_cli.run(args, cwd=cwd, env=_env(server))
    assert SECRET not in done.stdout + done.stderr, done.stderr
    return done


def _cycle_with_fault(server: TrackingServer, policy: Path, tmp_path: Path, fault: int, *options: str):
    """Start a forced cycle, send `fault` to the server once fitting starts; (exit code, stderr, seconds
    from the fault to the exit)."""
    marker = tmp_path / "fitting"
    cycle = subprocess.Popen(
        [sys.executable, "-m", "mlflow_retrain.cli", "cycle", "--config", str(policy), "--as-of", "2011-05-31",
         "--force", "--reason", "server fault drill", *options],
        env=_env(server, SLOWFIT_MARKER=str(marker), SLOWFIT_SECONDS="2"), cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert cycle.poll() is None, cycle.communicate()
            assert time.monotonic() < deadline, "the cycle never started fitting"
            time.sleep(0.1)
        server.signal(fault)
        struck = time.monotonic()
        out, err = cycle.communicate(timeout=BOUND + 60)
        return cycle.returncode, out, err, time.monotonic() - struck
    finally:
        if cycle.poll() is None:
            cycle.kill()
            cycle.wait()


def _assert_one_line_stop(code: int, out: str, err: str, seconds: float) -> None:
    assert SECRET not in out + err, err
    assert code == 2, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert errors[0].startswith("error: tracking server http://***@127.0.0.1:") and "stopped answering" in errors[0]
    assert out == "", out  # no result was printed
    assert seconds < BOUND, (seconds, err)


def _converges(server: TrackingServer, policy: Path, tmp_path: Path) -> inprocess_cli.Done:
    """The next cycle, at once: the lease the stopped cycle left held (for minutes, the default TTL)
    is taken over without waiting, its holder being gone (exit 3 would be a refusal)."""
    return _cli(server, tmp_path, "cycle", "--config", str(policy), "--as-of", "2011-05-31", "--retrain-via",
                "inprocess", "--json")


def test_a_server_killed_mid_cycle_ends_it_with_one_line_then_the_next_cycle_converges(tracking_server, faulty_policy,
                                                                                        tmp_path):
    boot = _cli(tracking_server, tmp_path, "train", "--config", str(faulty_policy), "--as-of", "2011-04-30")
    assert boot.returncode == 0, boot.stderr
    # the default trainer: the MLproject in a subprocess, whose output the cycle forwards
    code, out, err, seconds = _cycle_with_fault(tracking_server, faulty_policy, tmp_path, signal.SIGKILL)
    print(f"killed server: the cycle exited {code} {seconds:.1f} s after the kill\n{err}")
    _assert_one_line_stop(code, out, err, seconds)
    tracking_server.proc.wait(30)
    tracking_server.start()  # same store, same port
    done = _converges(tracking_server, faulty_policy, tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_paused_server_ends_the_cycle_within_the_deadline_then_the_next_cycle_converges(tracking_server,
                                                                                         faulty_policy, tmp_path):
    boot = _cli(tracking_server, tmp_path, "train", "--config", str(faulty_policy), "--as-of", "2011-04-30")
    assert boot.returncode == 0, boot.stderr
    try:
        code, out, err, seconds = _cycle_with_fault(tracking_server, faulty_policy, tmp_path, signal.SIGSTOP,
                                                    "--retrain-via", "inprocess")
    finally:
        tracking_server.signal(signal.SIGCONT)
    print(f"paused server: the cycle exited {code} {seconds:.1f} s after the pause")
    _assert_one_line_stop(code, out, err, seconds)
    assert "no answer within 2 s" in err
    done = _converges(tracking_server, faulty_policy, tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_silent_server_costs_each_call_its_timeout_and_retries_then_nothing(monkeypatch):
    """The guard alone, against a socket that accepts and never answers (what a frozen server is)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    for name, value in {**LIMITS, "MLFLOW_HTTP_REQUEST_TIMEOUT": "2", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5"}.items():
        monkeypatch.setenv(name, value)
    # this process's outage record and limits are put back afterwards: later tests here use servers
    monkeypatch.setattr(tracking, "_outage", tracking._Outage())
    monkeypatch.setattr(tracking, "_limits", tracking._limits)
    configure_client()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        client = MlflowClient(f"http://user:{SECRET}@127.0.0.1:{silent.getsockname()[1]}")
        took = []
        for _ in range(5):
            started = time.monotonic()
            with pytest.raises((MlflowException, TrackingServerError)) as caught:
                client.search_experiments()
            took.append(time.monotonic() - started)
            error = server_error(caught.value)
            assert error is not None and SECRET not in str(error) and "no answer within 2 s" in str(error)
    assert 3.5 < took[0] < 8, took  # two attempts of 2 s (the first retry has no backoff)
    assert 1.5 < took[1] < 3.5, took  # after a miss: one short try, no retry
    assert max(took[3:]) < 0.5 and sum(took) < 8 + 2, took  # past the deadline: no wait at all
