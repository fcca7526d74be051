"""The lease under pressure (see test_lease.py), a cycle cut during its training: its whole process
tree SIGKILLed while its `mlflow run` child trains, or frozen past its lease with its trainer and
fenced when it wakes; and a training child given a lost lease generation writes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import forked_cli
from mlflow.tracking import MlflowClient
from test_lease import FIRING, _cli, _freeze, _one_production, _running_cycle_run, _short_lease_and_taker, _wait

from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.loop.reconcile import controller_experiment, doctor
from mlflow_retrain.adapters.registry import Registry, utcnow


# ---- f. a cycle cut during training: killed, or fenced ---------------------------------------------------
def _descendants(pid: int) -> list[int]:
    """Every process `pid` started, and theirs (from /proc): `mlflow run`, the shell, the trainer."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def _trainer_child(pid: int) -> int | None:
    """The process under the cycle `pid` that runs the built-in trainer (the shell's, if it forked)."""
    found = None
    for child in _descendants(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"mlflow_retrain.cli train" in cmdline:
            found = child
    return found


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and everything under it (`mlflow run` starts its own process group)."""
    for process in [pid, *_descendants(pid)]:
        try:
            os.kill(process, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _training_run(config, cycle_run: str) -> str | None:
    """The RUNNING training run of the cycle `cycle_run`, whatever it was tagged with yet."""
    experiment = MlflowClient().get_experiment_by_name(config.experiment)
    runs = MlflowClient().search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") if experiment else []
    return next((r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId") == cycle_run), None)


def _running_runs(config) -> list[str]:
    client = MlflowClient()
    ids = [e.experiment_id for e in (client.get_experiment_by_name(n) for n in
                                     (config.experiment, controller_experiment(config))) if e is not None]
    return [r.info.run_id for r in client.search_runs(ids, "attributes.status = 'RUNNING'")]


def _start_training_cycle(path: str, config, tmp_path: Path) -> tuple[subprocess.Popen, str, str, int]:
    """A cycle that retrains through the built-in MLproject (`mlflow run`), in its own session;
    returned once its training child runs: (process, cycle run, training run, child pid)."""
    out, err = (tmp_path / "a.stdout").open("w"), (tmp_path / "a.stderr").open("w")
    a = subprocess.Popen([sys.executable, "-m", "mlflow_retrain.cli", "cycle", "--config", path, "--as-of",
                          "2011-05-31", "--json"], stdout=out, stderr=err, start_new_session=True)
    out.close()
    err.close()
    try:
        cycle_run = _wait("the cycle to open its run", lambda: _running_cycle_run(config), timeout=240)
        training_run = _wait("the training run", lambda: _training_run(config, cycle_run), timeout=240)
        child = _wait("the training child", lambda: _trainer_child(a.pid), timeout=120)
        assert a.poll() is None, (tmp_path / "a.stderr").read_text()[-2000:]
    except BaseException:
        _kill_tree(a.pid)
        a.wait()
        raise
    return a, cycle_run, training_run, child


def test_a_cycle_killed_during_training_leaves_no_running_run_and_its_lease_is_taken_at_once(
        prod_store, write_policy, tmp_path):
    """SIGKILL of the cycle's whole process tree while its `mlflow run` child trains (the lease's TTL
    is the default, minutes): doctor lists the training run as well as the cycle's, and the next
    cycle on this host takes the dead cycle's lease at once and ends both runs FAILED."""
    path = str(write_policy(triggers=FIRING))
    config = load_config(path)
    a, cycle_run, training_run, child = _start_training_cycle(path, config, tmp_path)
    time.sleep(0.5)  # the trainer has started: the cycle is cut during its training
    _kill_tree(a.pid)
    a.wait()
    _wait("the training child to die", lambda: not Path(f"/proc/{child}").exists(), timeout=30)

    before = _cli("doctor", "--config", path, "--json")
    assert before.returncode == 4, before.stderr
    report = json.loads(before.stdout)
    assert {cycle_run, training_run} <= set(report["crashed_runs"]), report
    assert "no longer runs" in report["lease_holder_gone"], report

    started = time.monotonic()
    b = _cli("cycle", "--config", path, "--as-of", "2011-05-31", "--retrain-via", "inprocess", "--json")
    assert b.returncode == 0, b.stderr
    assert time.monotonic() - started < 120  # not the lease's five minutes
    assert "freed before its expiry" in b.stderr, b.stderr
    closed = json.loads(b.stdout)["reconciled"]["closed_runs"]
    assert {cycle_run, training_run} <= set(closed), closed
    assert _running_runs(config) == []
    run = MlflowClient().get_run(training_run)
    assert run.info.status == "FAILED" and run.data.tags[T.CLOSED_BY], run.data.tags
    assert cycle_run in run.data.tags[T.CLOSED_REASON], run.data.tags
    after = doctor(config)
    assert after.healthy and after.crashed_runs == [] and after.lease is None, after.to_dict()


def test_a_cycle_that_loses_its_lease_during_training_stops_its_training_child(prod_store, write_policy, tmp_path):
    """The cycle and its trainer frozen (a paused VM) past the lease's TTL; another cycle takes over
    and promotes. The cycle, woken first, stops its still-frozen trainer (SIGTERM, delivered when it
    wakes) and exits 3 "lost the lease": true, since neither it nor its child registers anything."""
    path, taker = _short_lease_and_taker(write_policy, "0.1m")  # the cycle's: 6 s, renewed every 2 s
    config = load_config(path)
    registry = Registry(config)
    a, cycle_run, training_run, trainer = _start_training_cycle(path, config, tmp_path)
    try:
        _freeze(trainer, tmp_path / "mlflow.db")
        _freeze(a.pid, tmp_path / "mlflow.db")
        _wait("the cycle's lease to expire", lambda: registry.lease.generations()[-1].expires < utcnow(), timeout=30)
        b = _cli("cycle", "--config", taker, "--as-of", "2011-05-31", "--retrain-via", "inprocess", "--json")
        assert b.returncode == 0, b.stderr
        report_b = json.loads(b.stdout)
        assert report_b["outcome"] == "promoted", report_b
        assert {cycle_run, training_run} <= set(report_b["reconciled"]["closed_runs"]), report_b
        os.kill(a.pid, signal.SIGCONT)
        _wait("the cycle to stop its trainer",
              lambda: "stopping the training run" in (tmp_path / "a.stderr").read_text(), timeout=60)
    finally:
        os.kill(a.pid, signal.SIGCONT)
        os.kill(trainer, signal.SIGCONT)
    try:
        assert a.wait(120) == 3
    finally:
        _kill_tree(a.pid)
    stderr = (tmp_path / "a.stderr").read_text()
    assert "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: this cycle lost the lease"), stderr[-2000:]
    assert [v.version for v in registry.versions() if v.tags.get(T.CYCLE_RUN_ID) == cycle_run] == []
    assert _one_production(registry) == report_b["candidate_version"]
    assert len(registry.versions()) == 2
    assert MlflowClient().get_run(training_run).info.status == "FAILED"
    assert _running_runs(config) == []
    assert doctor(config).healthy


def test_a_training_child_given_a_lost_lease_generation_writes_nothing(prod_store, write_policy):
    """`mlflow-retrain train` as a cycle's `mlflow run` child runs it (a cycle run id, the lease's
    generation in its environment): once a later generation exists it opens no run and registers
    nothing; under the live generation it registers its version for the cycle to place."""
    from mlflow_retrain.adapters.registry.lease import LEASE_ENV

    path = str(write_policy())
    config = load_config(path)
    registry = Registry(config)
    lost = registry.acquire_lease(timedelta(minutes=5))
    registry.release_lease(lost)
    live = registry.acquire_lease(timedelta(minutes=5))
    args = ("train", "--config", path, "--as-of", "2011-05-31", "--cycle-run-id", "a-cycle", "--json")
    experiment = MlflowClient().get_experiment_by_name(config.experiment).experiment_id
    runs = len(MlflowClient().search_runs([experiment]))
    fenced = forked_cli.run(args, env={**os.environ, LEASE_ENV: str(lost.generation)})
    assert fenced.returncode == 3 and fenced.stdout == "", fenced.stderr
    assert fenced.stderr.strip().splitlines()[-1].startswith("error: this cycle lost the lease"), fenced.stderr
    assert [v.version for v in registry.versions()] == ["1"]
    assert len(MlflowClient().search_runs([experiment])) == runs
    held = forked_cli.run(args, env={**os.environ, LEASE_ENV: str(live.generation)})
    assert held.returncode == 0, held.stderr
    assert registry.get("2").tags[T.CYCLE_RUN_ID] == "a-cycle" and registry.get("2").stage == "None"
    registry.release_lease(live)
