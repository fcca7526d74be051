"""The fault-injection harness: kill a real cycle process at a named registry write, then converge.

Each cycle runs in a child process (killed with a real SIGKILL by `mlflow_retrain.base.faults`) forked
from a fork server that imported MLflow, Evidently and scikit-learn once, so a kill costs the
cycle's work and not its imports. A fork server, not a fork of the test process: the test process
has trained models (OpenMP's thread pool does not survive a fork) and opened stores. Every read of
a store happens in a child too.

A scenario is: a store (a copied sqlite file, or a real server reset to a saved state) and a cycle.
`points` lists the fault points the cycle passes; `kill` runs it with a kill at one; `recover` runs
the next normal cycle in the same store at once (the killed cycle's lease is freed without waiting
out its TTL: its holder, a process on this host, is provably gone) and returns what the registry
looks like then (`Outcome`), checked by `assert_converged`.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection
import os
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# imported here, before any fork, so children do not pay for them
import evidently  # noqa: F401
import sklearn.ensemble  # noqa: F401
import skops.io  # noqa: F401

import mlflow_retrain.loop.cycle  # noqa: F401
from mlflow_retrain.adapters.train import model_requirements
from mlflow_retrain.base import faults
from mlflow_retrain.base import tags as T

model_requirements(object())  # reads the installed distributions (0.4 s of CPU) once, for every child to reuse


@dataclass
class Scenario:
    name: str
    folder: Path  # the working folder of its cycles (policy, data, artifacts of new experiments)
    uri: str
    policy: Path  # of the cycle that is killed
    cycle: dict[str, Any]  # its run_cycle keyword arguments
    recovery_policy: Path  # of the next cycle (usually one whose triggers stay quiet)
    recovery: dict[str, Any] = field(default_factory=dict)
    prepare: str = ""  # functions of this module run in the child before the cycle ("approved", "expired_lease")


def _in_child(scenario: Scenario, env: dict[str, str], kind: str, queue: Any) -> None:
    if _LOADED_IN == os.getpid():  # not inherited from the fork server: each kill would pay for the imports
        queue.put(("error", "the fork server did not preload fault_harness"))
        return
    work = {"cycle": _cycle, "recover": _recover}[kind]
    os.environ.update(env)
    os.environ["MLFLOW_TRACKING_URI"] = scenario.uri
    os.chdir(scenario.folder)
    import mlflow

    mlflow.set_tracking_uri(scenario.uri)
    try:
        queue.put(("ok", work(scenario)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        queue.put(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"))


_CTX = mp.get_context("forkserver")
# what a child would otherwise import itself: this module's imports, and MLflow's stores and flavor
PRELOAD = ["fault_harness", "mlflow.sklearn", "mlflow.pyfunc", "mlflow.store.tracking.sqlalchemy_store",
           "mlflow.store.model_registry.sqlalchemy_store", "mlflow.store.tracking.rest_store",
           "mlflow.store.model_registry.rest_store", "git", "pyarrow.parquet"]
_CTX.set_forkserver_preload(PRELOAD)
_LOADED_IN = os.getpid()  # the fork server's pid in its children, where this module was preloaded
_PATH_KEY = "FAULT_HARNESS_SAVED_PYTHONPATH"
_started = False
_starting = threading.Lock()

if _PATH_KEY in os.environ:  # imported by the fork server (see _start_fork_server): its children get the usual path
    saved = os.environ.pop(_PATH_KEY)
    if saved:
        os.environ["PYTHONPATH"] = saved
    else:
        os.environ.pop("PYTHONPATH", None)


def _start_fork_server() -> None:
    """Start the fork server with this folder on its path. Python 3.11 starts it as a bare `python -c`
    that ignores the test process's sys.path, so a preload of "fault_harness" alone failed silently
    and every child imported MLflow, Evidently and scikit-learn itself (5 s of CPU per kill)."""
    global _started
    with _starting:
        if not _started:
            _start_with_this_folder_on_path()
            _started = True


def _start_with_this_folder_on_path() -> None:
    from multiprocessing import forkserver

    # A process has one fork server, and one preload list. An earlier test of this pytest worker (a
    # fleet's pool) may have set its own list, or started the server with it: ours then never runs
    # and every child fails its check. Stop that server (its children live on) and start ours.
    forkserver._forkserver._stop()
    _CTX.set_forkserver_preload(PRELOAD)
    saved = os.environ.get("PYTHONPATH", "")
    os.environ[_PATH_KEY] = saved
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent), saved]))
    try:
        forkserver.ensure_running()
    finally:
        os.environ.pop(_PATH_KEY)
        if saved:
            os.environ["PYTHONPATH"] = saved
        else:
            os.environ.pop("PYTHONPATH")


def run_child(scenario: Scenario, kind: str, env: dict[str, str] | None = None,
              timeout: float = 300) -> tuple[int | None, Any]:
    """(exit code, what the child returned or ("error", text)); -9 when a fault point killed it."""
    _start_fork_server()
    queue = _CTX.Queue()
    child = _CTX.Process(target=_in_child, args=(scenario, env or {}, kind, queue))
    with _reading_exit_codes:
        child.start()
    finished = mp.connection.wait([child.sentinel], timeout)
    with _reading_exit_codes:
        if not finished:
            child.kill()
            child.join()
            raise AssertionError(f"{scenario.name}: child did not finish in {timeout} s")
        code = child.exitcode
    result = queue.get(timeout=5) if code == 0 else None
    return code, result


# A forkserver child's exit code is 8 bytes read once from its sentinel, and Process.start() polls
# every other child of this process (multiprocessing.process._cleanup). Two threads polling the same
# finished child race for those bytes: the loser reads EOF and records exit code 255 over the real
# -9 (a kill reported as "not killed"). Starts and exit-code reads take turns.
_reading_exit_codes = threading.Lock()


def _cycle(scenario: Scenario) -> str:
    from mlflow_retrain.policy.load import load_config
    from mlflow_retrain.loop.cycle import run_cycle

    if scenario.prepare:  # not part of what is killed: no fault point counts in it
        armed = {k: os.environ.pop(k) for k in (faults.FAULT, faults.FAULT_LOG) if k in os.environ}
        for step in scenario.prepare.split(","):
            globals()[step]()
        os.environ.update(armed)
    return run_cycle(load_config(scenario.policy), **scenario.cycle).outcome


def expired_lease() -> None:
    """A lease left by a cycle that died: expired, not released."""
    from datetime import timedelta

    from mlflow_retrain.policy.load import load_config
    from mlflow_retrain.adapters.registry import Registry

    registry = Registry(load_config("retrain.yaml"))
    if not registry.lease.generations():
        registry.acquire_lease(timedelta(seconds=-1), holder="dead-host:1:gone")


def approved() -> None:
    """v2, awaiting a person's sign-off, approved by hand in the MLflow UI: the tag alone, no name."""
    from mlflow.tracking import MlflowClient

    from mlflow_retrain.policy.load import load_config

    MlflowClient().set_model_version_tag(load_config("retrain.yaml").model_name, "2", T.APPROVAL, T.APPROVED)


def hand_moved() -> None:
    """The `production` alias pointed at v2 in the MLflow UI: a version nobody approved, served by hand."""
    from mlflow.tracking import MlflowClient

    from mlflow_retrain.policy.load import load_config

    MlflowClient().set_registered_model_alias(load_config("retrain.yaml").model_name, "production", "2")


def kinds(found: list[str]) -> list[str]:
    """The first point of each kind of registry write: over HTTP a kill at `tag retrain.decision` and
    one at `tag retrain.reason` cut the same kind of request at the same place in a move."""
    seen, first = set(), []
    for point in found:
        name = point.split("@", 1)[0]
        kind = " ".join(name.split()[:-1]) if name.startswith(("tag ", "model tag ", "model untag ")) else name
        if kind not in seen:
            seen.add(kind)
            first.append(point)
    return first


def points(scenario: Scenario, log: Path) -> list[str]:
    """Every fault point the scenario's cycle passes, as `name@n`, in order (the cycle completes)."""
    code, result = run_child(scenario, "cycle", {faults.FAULT_LOG: str(log)})
    assert code == 0 and result[0] == "ok", result
    return log.read_text().splitlines()


def kill(scenario: Scenario, point: str) -> int | None:
    code, result = run_child(scenario, "cycle", {faults.FAULT: point})
    assert code == -9, f"{scenario.name}: not killed at {point}: exit {code}, {result}"
    return code


@dataclass(frozen=True)
class Outcome:
    """The registry after the recovery cycle, as plain data."""

    recovery: str
    needed_repair: bool
    healthy: bool
    findings: list[str]
    stages: dict[str, str]  # version -> stage
    aliases: dict[str, str]
    tags: dict[str, dict[str, str]]
    running_runs: int
    reconcile_runs: int
    lease_objects: list[str]


def recover(scenario: Scenario) -> Outcome:
    code, result = run_child(scenario, "recover")
    assert code == 0 and result[0] == "ok", f"{scenario.name}: recovery failed: {result}"
    return result[1]


def _recover(scenario: Scenario) -> Outcome:
    import mlflow
    from mlflow.tracking import MlflowClient

    from mlflow_retrain.policy.load import load_config
    from mlflow_retrain.loop.cycle import run_cycle
    from mlflow_retrain.loop.reconcile import controller_experiment, crashed_runs
    from mlflow_retrain.adapters.registry import Registry, utcnow
    from mlflow_retrain.adapters.registry.repair import examine

    config = load_config(scenario.recovery_policy)
    registry = Registry(config)
    needed = not examine(registry, utcnow()).healthy or bool(crashed_runs(config, set()))
    outcome = run_cycle(config, **scenario.recovery).outcome
    client = MlflowClient()
    model = client.get_registered_model(config.model_name)
    versions = registry.versions()
    experiments = [e for e in (mlflow.get_experiment_by_name(n) for n in
                               (config.experiment, controller_experiment(config))) if e is not None]
    runs = mlflow.search_runs([e.experiment_id for e in experiments], output_format="list")
    return Outcome(
        outcome, needed, examine(registry, utcnow()).healthy,
        [f.problem for f in examine(registry, utcnow()).findings],
        {v.version: v.stage for v in versions}, {a: str(v) for a, v in model.aliases.items()},
        {v.version: dict(v.tags) for v in versions}, sum(r.info.status == "RUNNING" for r in runs),
        sum(r.data.tags.get(T.RUN_KIND) == "reconcile" for r in runs),
        [name for name, _, _ in registry.lease.objects(f"{config.model_name}.retrain-lease%")])


def assert_converged(outcome: Outcome, point: str, versions_before: int) -> None:
    """One Production, stage and alias agreeing, nothing pending, nothing deleted, tags complete,
    no run left RUNNING, a reconcile run when there was something to repair, no lease litter."""
    where = f"after a kill at {point}: {outcome}"
    assert outcome.healthy, where
    production = [v for v, stage in outcome.stages.items() if stage == "Production"]
    assert len(production) == 1 and outcome.aliases.get("production") == production[0], where
    assert sorted(map(int, outcome.stages)) == list(range(1, len(outcome.stages) + 1)), where  # none deleted
    assert len(outcome.stages) >= versions_before, where
    for version, tags in outcome.tags.items():
        assert tags.get(T.TRIGGER) and tags.get(T.DECISION) in (*T.JUDGED, T.ABANDONED), (version, where)
        if outcome.stages[version] == "Production":
            assert tags.get(T.PROMOTED_AT), where
        if T.PROMOTED_AT in tags and outcome.stages[version] == "Archived":
            assert tags.get(T.ARCHIVED_AT), where
    assert outcome.running_runs == 0, where
    assert outcome.reconcile_runs >= int(outcome.needed_repair), where
    assert len(outcome.lease_objects) <= 1, where
